"""normflows' module path for its 2-D "prior" densities: ``nf.distributions.prior.TwoModes`` and the like."""

from .targets import Sinusoidal, Smiley, TwoModes

__all__ = ["Sinusoidal", "Smiley", "TwoModes"]
