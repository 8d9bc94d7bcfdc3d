"""normflows' ``nf.distributions.target`` path: ``nf.distributions.target.TwoMoons()`` and the like."""

from ....distributions.targets import CircularGaussianMixture, RingMixture, Target, TwoMoons

__all__ = ["CircularGaussianMixture", "RingMixture", "Target", "TwoMoons"]
