"""normflows' ``nf.nets.made`` path: ``MADE`` with normflows' (nflows') argument order."""

from __future__ import annotations

import torch.nn.functional as F

from ....nets.made import MADE as NativeMADE
from ....nets.made import refuse_batch_norm


class MADE(NativeMADE):
    r"""normflows' ``MADE(features, hidden_features, context_features=None, num_blocks=2,
    output_multiplier=1, use_residual_blocks=True, random_mask=False, activation=F.relu,
    dropout_probability=0.0, use_batch_norm=False)`` on flowforge's :class:`~flowforge.nets.MADE`
    (``use_batch_norm=True`` is refused: flowforge's MADE has no batch norm). The output has
    flowforge's shape ``(batch, features, output_multiplier)``."""

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        output_multiplier: int = 1,
        use_residual_blocks: bool = True,
        random_mask: bool = False,
        activation=F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
    ):
        refuse_batch_norm(use_batch_norm)
        super().__init__(
            features, hidden_features, context_features, num_blocks, output_multiplier, use_residual_blocks,
            random_mask, activation, dropout_probability,
        )  # fmt: skip


__all__ = ["MADE"]
