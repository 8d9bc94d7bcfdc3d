"""flowforge: normalizing flows for PyTorch.

``import flowforge as nf`` gives ``nf.NormalizingFlow``, the layers under ``nf.flows``,
the base and target densities under ``nf.distributions``, one-line models
(``nf.PlanarFlow``, ``nf.RealNVP``, ``nf.MAF``, ...), the fitting loop ``nf.train.fit`` and the
numbers in ``nf.metrics``.
"""

from . import datasets, distributions, flows, mcmc, metrics, nets, presets, train, transforms, utils
from .core import ClassCondFlow, ConditionalNormalizingFlow, MultiscaleFlow, NormalizingFlow
from .presets import IAF, MAF, NSF, Glow, NSFAutoregressive, PlanarFlow, RadialFlow, RealNVP, ResidualFlow

__version__ = "0.1.0"

__all__ = [
    "ClassCondFlow",
    "ConditionalNormalizingFlow",
    "MultiscaleFlow",
    "Glow",
    "IAF",
    "MAF",
    "NSF",
    "NSFAutoregressive",
    "NormalizingFlow",
    "PlanarFlow",
    "RadialFlow",
    "RealNVP",
    "ResidualFlow",
    "__version__",
    "datasets",
    "distributions",
    "flows",
    "mcmc",
    "metrics",
    "nets",
    "presets",
    "train",
    "transforms",
    "utils",
]
