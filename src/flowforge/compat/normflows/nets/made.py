"""normflows' ``nf.nets.made`` path: ``MADE`` with normflows' (nflows') argument order."""

from __future__ import annotations

from ....nets.made import MADE as NativeMADE
from .._arguments import made_init


class MADE(NativeMADE):
    r"""normflows' ``MADE(features, hidden_features, context_features=None, num_blocks=2,
    output_multiplier=1, use_residual_blocks=True, random_mask=False, activation=F.relu,
    dropout_probability=0.0, use_batch_norm=False)`` on flowforge's :class:`~flowforge.nets.MADE`
    (``use_batch_norm=True`` is refused: flowforge's MADE has no batch norm). The output has
    flowforge's shape ``(batch, features, output_multiplier)``."""

    __init__ = made_init(NativeMADE)


__all__ = ["MADE"]
