"""normflows' ``nf.utils.eval``: bits per dimension of image models trained on logit-transformed data."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F


def bitsPerDim(  # noqa: N802 (normflows' name)
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    trans: str = "logit",
    trans_param: Sequence[float] = (0.05,),
) -> torch.Tensor:
    r"""Bits per dimension of the 8-bit images behind ``x`` (in the model's logit space), per sample:
    ``−log q(x)/(D ln 2) − log₂(1 − α) + 8 + Σ (log₂σ(x) + log₂σ(−x))/D``, the change of variables
    of normflows' logit preprocessing ``logit(α + (1 − 2α)·)`` undone back to ``[0, 256)``
    (``α = trans_param[0]``). ``y``: class labels for class-conditional models. Only ``trans="logit"``."""
    if trans != "logit":
        raise NotImplementedError(f"The transformation {trans} is not implemented.")
    dims = torch.prod(torch.tensor(x.size()[1:]))
    log_q = model.log_prob(x) if y is None else model.log_prob(x, y)
    sum_dims = list(range(1, x.dim()))
    sigmoid_bits = torch.sum(F.logsigmoid(x) / math.log(2), sum_dims)
    sigmoid_bits = sigmoid_bits + torch.sum(F.logsigmoid(-x) / math.log(2), sum_dims)
    bits = -log_q / dims / math.log(2) - math.log2(1 - trans_param[0]) + 8
    return bits + sigmoid_bits / dims


def bitsPerDimDataset(  # noqa: N802 (normflows' name)
    model: Any,
    data_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    class_cond: bool = True,
    trans: str = "logit",
    trans_param: Sequence[float] = (0.05,),
) -> float:
    """The mean of :func:`bitsPerDim` over the ``(x, y)`` batches of ``data_loader`` (without
    gradients), NaN samples left out."""
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in data_loader:
            bits = bitsPerDim(model, x, y.to(x.device) if class_cond else None, trans, trans_param).cpu()
            finite = ~torch.isnan(bits)
            total += float(bits[finite].sum())
            count += int(finite.sum())
    return total / count


__all__ = ["bitsPerDim", "bitsPerDimDataset"]
