"""normflows' API on flowforge: ``from flowforge.compat import normflows as nf``.

Every public name of normflows 1.7.3 at its own module path (``nf.flows.affine.coupling``,
``nf.distributions.target``, ``nf.nets.made``, ``nf.utils.splines``, ...), with normflows' positional
arguments, defaults, directions, numerics and ``state_dict`` layout: normflows' own unit tests pass on
it, and a normflows checkpoint loads into the model built by the same calls and gives the same
outputs (tests/test_normflows_suite.py, tests/test_compat_*_parity.py). Where flowforge's native class
is normflows' it is re-exported or thinly subclassed; where normflows' layer is a different map
(directions, parameterisation, conditioner structure) the compat class is its own small module.
docs/normflows.md lists the deliberate differences. Importing this package also fills the
deprecation bridge of the native modules (:func:`install_bridge`).
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
