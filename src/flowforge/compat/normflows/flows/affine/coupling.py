"""normflows' ``nf.flows.affine.coupling`` path: its affine couplings on flowforge's."""

from __future__ import annotations

from .....flows.affine import AffineConstFlow
from .....flows.coupling import AffineCoupling, AffineCouplingBlock, MaskedAffineCoupling


class MaskedAffineFlow(MaskedAffineCoupling):
    r"""normflows' ``MaskedAffineFlow(b, t=None, s=None)``: flowforge's
    :class:`~flowforge.flows.MaskedAffineCoupling`, whose arguments and mask convention (ones in
    ``b`` mark the kept coordinates) are the same: ``x = b ⊙ z + (1 − b) ⊙ (z ⊙ exp(s(b ⊙ z)) + t(b ⊙ z))``.
    The log-scale is soft-clamped to ``±clamp`` (10 by default) as in flowforge."""


__all__ = ["AffineConstFlow", "AffineCoupling", "AffineCouplingBlock", "MaskedAffineFlow"]
