"""Flow layers: ``nf.flows.Planar``, ``nf.flows.Radial``, ... (one file per family)."""

from .affine import AffineConstFlow
from .autoregressive import InverseAutoregressive, MaskedAffineAutoregressive
from .base import Composite, EventFlow, Flow, Reverse
from .coupling import MaskedAffineFlow, alternating_mask
from .mixing import Permute
from .planar import Planar
from .radial import Radial

__all__ = [
    "AffineConstFlow",
    "Composite",
    "EventFlow",
    "Flow",
    "InverseAutoregressive",
    "MaskedAffineAutoregressive",
    "MaskedAffineFlow",
    "Permute",
    "Planar",
    "Radial",
    "Reverse",
    "alternating_mask",
]
