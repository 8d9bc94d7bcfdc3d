"""normflows' ``nf.flows.affine.autoregressive`` path: MAF with normflows' argument order."""

from __future__ import annotations

from .....flows.autoregressive import MaskedAffineAutoregressive as NativeMaskedAffineAutoregressive
from ..._arguments import made_init


class MaskedAffineAutoregressive(NativeMaskedAffineAutoregressive):
    r"""normflows' ``MaskedAffineAutoregressive(features, hidden_features, context_features=None,
    num_blocks=2, use_residual_blocks=True, random_mask=False, activation=F.relu,
    dropout_probability=0.0, use_batch_norm=False)`` on flowforge's
    :class:`~flowforge.flows.MaskedAffineAutoregressive` (which has no ``use_batch_norm``:
    ``True`` is refused, as flowforge's MADE has no batch norm). The log-scale is soft-clamped to
    ±5 as in flowforge."""

    __init__ = made_init(NativeMaskedAffineAutoregressive)


__all__ = ["MaskedAffineAutoregressive"]
