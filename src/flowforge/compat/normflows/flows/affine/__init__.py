"""normflows' ``nf.flows.affine`` path: affine couplings, MAF and Glow steps."""

from . import autoregressive, coupling, glow
from .autoregressive import MaskedAffineAutoregressive
from .coupling import AffineConstFlow, AffineCoupling, AffineCouplingBlock, CCAffineConst, MaskedAffineFlow
from .glow import GlowBlock

__all__ = [
    "AffineConstFlow",
    "AffineCoupling",
    "AffineCouplingBlock",
    "CCAffineConst",
    "GlowBlock",
    "MaskedAffineAutoregressive",
    "MaskedAffineFlow",
    "autoregressive",
    "coupling",
    "glow",
]
