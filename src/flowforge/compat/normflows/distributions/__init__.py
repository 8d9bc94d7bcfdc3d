"""normflows' ``nf.distributions``: base densities (:mod:`.base`), targets (:mod:`.target`), 2-D
"prior" densities (:mod:`.prior`), VAE encoders and decoders (:mod:`.encoder`, :mod:`.decoder`),
Metropolis-Hastings proposals (:mod:`.mh_proposal`) and :mod:`.linear_interpolation`, on flowforge's.

The package exports the names normflows 1.7.3 exports, from the same submodules: as there,
``nf.distributions.Uniform`` is the *encoder* ``Uniform`` (the uniform base is
``nf.distributions.base.Uniform``), and the conditional Gaussians are reached through their modules.
"""

from . import base, decoder, encoder, linear_interpolation, mh_proposal, prior, target
from .base import (
    AffineGaussian,
    BaseDistribution,
    ClassCondDiagGaussian,
    DiagGaussian,
    GaussianMixture,
    GaussianPCA,
    GlowBase,
    UniformGaussian,
)
from .decoder import BaseDecoder, NNBernoulliDecoder, NNDiagGaussianDecoder
from .encoder import BaseEncoder, Dirac, NNDiagGaussian, Uniform
from .linear_interpolation import LinearInterpolation
from .mh_proposal import DiagGaussianProposal, MHProposal
from .prior import ImagePrior, PriorDistribution, Sinusoidal, Sinusoidal_gap, Sinusoidal_split, Smiley, TwoModes
from .target import CircularGaussianMixture, RingMixture, Target, TwoIndependent, TwoMoons

__all__ = [
    "AffineGaussian",
    "BaseDecoder",
    "BaseDistribution",
    "BaseEncoder",
    "CircularGaussianMixture",
    "ClassCondDiagGaussian",
    "DiagGaussian",
    "DiagGaussianProposal",
    "Dirac",
    "GaussianMixture",
    "GaussianPCA",
    "GlowBase",
    "ImagePrior",
    "LinearInterpolation",
    "MHProposal",
    "NNBernoulliDecoder",
    "NNDiagGaussian",
    "NNDiagGaussianDecoder",
    "PriorDistribution",
    "RingMixture",
    "Sinusoidal",
    "Sinusoidal_gap",
    "Sinusoidal_split",
    "Smiley",
    "Target",
    "TwoIndependent",
    "TwoModes",
    "TwoMoons",
    "Uniform",
    "UniformGaussian",
    "base",
    "decoder",
    "encoder",
    "linear_interpolation",
    "mh_proposal",
    "prior",
    "target",
]
