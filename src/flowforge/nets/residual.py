"""Residual fully connected conditioner."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ResidualNet(nn.Module):
    """``in_features -> hidden -> [residual block] × num_blocks -> out_features``.

    Each block is ``h + W₂ act(W₁ act(h) + V c)`` with an optional context ``c`` (which also enters
    the first layer beside ``x``), or with ``gate_context`` ``h + (W₂ act(W₁ act(h))) ⊙ σ(V c)``: the
    context gates each block's update (a GLU, as in Durkan et al.'s reference code for neural spline
    flows). The argument order follows normflows. With ``init_zeros`` the output layer starts at zero
    (identity flows).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        activation: Callable[[torch.Tensor], torch.Tensor] = F.relu,
        dropout_probability: float = 0.0,
        init_zeros: bool = False,
        gate_context: bool = False,
    ):
        super().__init__()
        if min(in_features, out_features, hidden_features, num_blocks) < 1:
            raise ValueError("ResidualNet sizes must be positive")
        self.in_features, self.context_features, self.gate_context = in_features, context_features, gate_context
        self.initial = nn.Linear(in_features + (context_features or 0), hidden_features)
        self.first = nn.ModuleList(nn.Linear(hidden_features, hidden_features) for _ in range(num_blocks))
        self.second = nn.ModuleList(nn.Linear(hidden_features, hidden_features) for _ in range(num_blocks))
        self.context = (
            nn.ModuleList(nn.Linear(context_features, hidden_features) for _ in range(num_blocks))
            if context_features
            else None
        )
        self.final = nn.Linear(hidden_features, out_features)
        if init_zeros:
            nn.init.zeros_(self.final.weight)
            nn.init.zeros_(self.final.bias)
        self.activation = activation
        self.dropout = nn.Dropout(dropout_probability)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"ResidualNet expects input of shape (batch, {self.in_features}), got {tuple(x.shape)}")
        if (context is None) != (self.context is None):
            raise ValueError("ResidualNet: pass a context exactly when it was built with context_features")
        if context is not None and context.shape != (x.shape[0], self.context_features):
            raise ValueError(
                f"ResidualNet expects a context of shape ({x.shape[0]}, {self.context_features}), "
                f"got {tuple(context.shape)}"
            )
        h = self.initial(x if context is None else torch.cat([x, context], 1))
        for index, (first, second) in enumerate(zip(self.first, self.second, strict=True)):
            inner = first(self.activation(h))
            if self.context is not None and not self.gate_context:
                inner = inner + self.context[index](context)
            update = second(self.dropout(self.activation(inner)))
            if self.context is not None and self.gate_context:
                update = update * torch.sigmoid(self.context[index](context))
            h = h + update
        return self.final(self.activation(h))
