"""normflows' module path for target densities: ``nf.distributions.target.TwoMoons`` and the like."""

from .targets import CircularGaussianMixture, RingMixture, Target, TwoMoons

__all__ = ["CircularGaussianMixture", "RingMixture", "Target", "TwoMoons"]
