"""normflows' ``nf.flows.affine.glow`` path."""

from .....flows.glow import GlowBlock

__all__ = ["GlowBlock"]
