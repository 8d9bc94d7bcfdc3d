"""normflows' ``nf.flows.neural_spline`` path: its four spline layers (:mod:`.wrapper`)."""

from . import wrapper
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
    "wrapper",
]
