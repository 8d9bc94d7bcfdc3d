"""normflows' ``nf.flows.affine.autoregressive`` path: MAF with normflows' argument order."""

from __future__ import annotations

import torch.nn.functional as F

from .....flows.autoregressive import MaskedAffineAutoregressive as NativeMaskedAffineAutoregressive
from .....nets.made import refuse_batch_norm


class MaskedAffineAutoregressive(NativeMaskedAffineAutoregressive):
    r"""normflows' ``MaskedAffineAutoregressive(features, hidden_features, context_features=None,
    num_blocks=2, use_residual_blocks=True, random_mask=False, activation=F.relu,
    dropout_probability=0.0, use_batch_norm=False)`` on flowforge's
    :class:`~flowforge.flows.MaskedAffineAutoregressive` (which has no ``use_batch_norm``:
    ``True`` is refused, as flowforge's MADE has no batch norm). The log-scale is soft-clamped to
    ±5 as in flowforge."""

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        use_residual_blocks: bool = True,
        random_mask: bool = False,
        activation=F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
    ):
        refuse_batch_norm(use_batch_norm)
        super().__init__(
            features, hidden_features, context_features, num_blocks, use_residual_blocks, random_mask,
            activation, dropout_probability,
        )  # fmt: skip


__all__ = ["MaskedAffineAutoregressive"]
