"""Flow layers: ``nf.flows.Planar``, ``nf.flows.Radial``, ... (one file per family)."""

from .affine import AffineConstFlow
from .base import Composite, EventFlow, Flow, Reverse
from .mixing import Permute
from .planar import Planar
from .radial import Radial

__all__ = ["AffineConstFlow", "Composite", "EventFlow", "Flow", "Permute", "Planar", "Radial", "Reverse"]
