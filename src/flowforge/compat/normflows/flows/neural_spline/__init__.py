"""normflows' ``nf.flows.neural_spline``: nflows' spline layers (:mod:`.coupling`,
:mod:`.autoregressive`) and normflows' four wrappers (:mod:`.wrapper`)."""

from . import autoregressive, coupling, wrapper
from .wrapper import (
    AutoregressiveRationalQuadraticSpline,
    CircularAutoregressiveRationalQuadraticSpline,
    CircularCoupledRationalQuadraticSpline,
    CoupledRationalQuadraticSpline,
)

__all__ = [
    "AutoregressiveRationalQuadraticSpline",
    "CircularAutoregressiveRationalQuadraticSpline",
    "CircularCoupledRationalQuadraticSpline",
    "CoupledRationalQuadraticSpline",
    "autoregressive",
    "coupling",
    "wrapper",
]
