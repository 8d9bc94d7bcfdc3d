"""Flow layers: ``nf.flows.Planar``, ``nf.flows.Radial``, ... (one file per family)."""

from .affine import AffineConstFlow
from .autoregressive import AutoregressiveFlow, InverseAutoregressive, MaskedAffineAutoregressive
from .base import Composite, EventFlow, Flow, Reverse
from .coupling import MaskedAffineFlow, alternating_mask
from .mixing import Permute
from .planar import Planar
from .radial import Radial
from .splines import (
    AutoregressiveRationalQuadraticSpline,
    CircularAutoregressiveRationalQuadraticSpline,
    CircularCoupledRationalQuadraticSpline,
    CoupledRationalQuadraticSpline,
    RationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
)

__all__ = [
    "AffineConstFlow",
    "AutoregressiveFlow",
    "AutoregressiveRationalQuadraticSpline",
    "CircularAutoregressiveRationalQuadraticSpline",
    "CircularCoupledRationalQuadraticSpline",
    "Composite",
    "CoupledRationalQuadraticSpline",
    "EventFlow",
    "Flow",
    "InverseAutoregressive",
    "MaskedAffineAutoregressive",
    "MaskedAffineFlow",
    "Permute",
    "Planar",
    "Radial",
    "RationalQuadraticAutoregressive",
    "RationalQuadraticCoupling",
    "Reverse",
    "alternating_mask",
]
