"""normflows' ``nf.distributions``: base densities (:mod:`.base`), targets (:mod:`.target`) and its 2-D
"prior" densities (:mod:`.prior`), on flowforge's."""

from . import base, prior, target
from .base import BaseDistribution, ClassCondDiagGaussian, ConditionalDiagGaussian, DiagGaussian, GaussianMixture
from .prior import Sinusoidal, Smiley, TwoModes
from .target import CircularGaussianMixture, RingMixture, Target, TwoMoons

__all__ = [
    "BaseDistribution",
    "CircularGaussianMixture",
    "ClassCondDiagGaussian",
    "ConditionalDiagGaussian",
    "DiagGaussian",
    "GaussianMixture",
    "RingMixture",
    "Sinusoidal",
    "Smiley",
    "Target",
    "TwoModes",
    "TwoMoons",
    "base",
    "prior",
    "target",
]
