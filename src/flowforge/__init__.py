"""flowforge: normalizing flows for PyTorch.

``import flowforge as nf`` gives ``nf.NormalizingFlow``, the layers under ``nf.flows``,
the base and target densities under ``nf.distributions``, one-line models
(``nf.PlanarFlow``, ``nf.RealNVP``, ``nf.MAF``, ...), VAEs with flow posteriors (``nf.VAE``), the
fitting loops in ``nf.train`` and the numbers in ``nf.metrics``.
"""

from . import datasets, distributions, flows, mcmc, metrics, nets, presets, train, transforms, utils, vae
from .core import ClassCondFlow, ConditionalNormalizingFlow, MultiscaleFlow, NormalizingFlow
from .presets import IAF, MAF, NSF, VAE, Glow, NSFAutoregressive, PlanarFlow, RadialFlow, RealNVP, ResidualFlow
from .vae import FlowVAE

__version__ = "0.1.0"

__all__ = [
    "ClassCondFlow",
    "ConditionalNormalizingFlow",
    "FlowVAE",
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
    "VAE",
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
    "vae",
]
