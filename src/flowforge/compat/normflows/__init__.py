"""normflows' API on flowforge: ``from flowforge.compat import normflows as nf``.

The names, positional argument orders, module paths (``nf.flows``, ``nf.distributions.target``,
``nf.transforms``, ``nf.nets.made``, ``nf.utils.optim``, ...) and mask conventions of normflows 1.7
that flowforge supports, each mapped onto a native class: a re-export where the native class
already is normflows' (``nf.flows.Planar``), a thin subclass where only the signature or a
convention differs (``nf.flows.CoupledRationalQuadraticSpline``, whose mask marks the transformed
coordinates). Numerics are flowforge's. Importing this package also fills the deprecation bridge
of the native modules (:func:`install_bridge`).
"""

from . import core, distributions, flows, nets, sampling, transforms, utils
from ._bridge import install_bridge
from .core import ClassCondFlow, ConditionalNormalizingFlow, MultiscaleFlow, NormalizingFlow, NormalizingFlowVAE
from .sampling import HAIS

install_bridge()

__all__ = [
    "HAIS",
    "ClassCondFlow",
    "ConditionalNormalizingFlow",
    "MultiscaleFlow",
    "NormalizingFlow",
    "NormalizingFlowVAE",
    "core",
    "distributions",
    "flows",
    "nets",
    "sampling",
    "transforms",
    "utils",
]
