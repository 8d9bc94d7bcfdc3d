"""normflows' ``nf.distributions.prior`` path for its 2-D densities: ``nf.distributions.prior.TwoModes`` etc."""

from ....distributions.targets import Sinusoidal, Smiley, TwoModes

__all__ = ["Sinusoidal", "Smiley", "TwoModes"]
