"""MADE: a masked autoencoder whose ``i``-th outputs depend only on inputs ``< i`` in an order."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(f"mask must have shape {(out_features, in_features)}, got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation (Germain et al. 2015, https://arxiv.org/abs/1502.03509).

    Maps ``x ∈ R^D`` (and an optional context ``c``) to ``D × output_multiplier`` outputs, where the
    outputs of feature ``i`` (in ``order``) depend only on features before it and on ``c``. Hidden
    units get degrees ``1 … D−1`` cyclically; a connection ``j → k`` exists when
    ``degree(k) ≥ degree(j)`` (hidden) or ``degree(k) > degree(j)`` (output). The context enters
    the first layer unmasked. The output layer starts at zero, so a flow built on it starts at the
    identity.

    Output shape: ``(batch, features, output_multiplier)``.

    Args:
        features: D.
        hidden_features: width of each hidden layer.
        context_features: size of the context vector, or None.
        num_blocks: number of hidden layers.
        output_multiplier: parameters per feature (2 for affine: shift and log-scale).
        activation: activation module class; dropout_probability: dropout after each hidden layer.
        order: a permutation of ``range(D)``; ``order[i]`` is feature ``i``'s position in the
            autoregressive sequence, so its outputs see the features with smaller positions
            (default: ``0, 1, …, D−1``).
    """

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        output_multiplier: int = 2,
        order: torch.Tensor | None = None,
        activation: type[nn.Module] = nn.ReLU,
        dropout_probability: float = 0.0,
    ):
        super().__init__()
        if features < 1 or hidden_features < 1 or num_blocks < 1 or output_multiplier < 1:
            raise ValueError("MADE sizes must be positive")
        order = torch.arange(features) if order is None else torch.as_tensor(order)
        if sorted(order.tolist()) != list(range(features)):
            raise ValueError(f"order must be a permutation of range({features}), got {order.tolist()}")
        self.features, self.context_features, self.output_multiplier = features, context_features, output_multiplier
        input_degrees = order + 1
        hidden_degrees = torch.arange(hidden_features) % max(features - 1, 1) + 1
        degrees = [input_degrees] + [hidden_degrees] * num_blocks
        self.hidden = nn.ModuleList(
            MaskedLinear(len(d_in), len(d_out), (d_out[:, None] >= d_in[None, :]))
            for d_in, d_out in zip(degrees[:-1], degrees[1:], strict=True)
        )
        self.context = nn.Linear(context_features, hidden_features) if context_features else None
        output_degrees = input_degrees.repeat_interleave(output_multiplier)
        self.output = MaskedLinear(
            hidden_features, features * output_multiplier, output_degrees[:, None] > hidden_degrees[None, :]
        )
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self.activation = activation()
        self.dropout = nn.Dropout(dropout_probability)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(f"MADE expects input of shape (batch, {self.features}), got {tuple(x.shape)}")
        h = self.hidden[0](x)
        if self.context is not None:
            if context is None or context.shape != (x.shape[0], self.context_features):
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"MADE expects a context of shape ({x.shape[0]}, {self.context_features}), got {got}")
            h = h + self.context(context)
        elif context is not None:
            raise ValueError("this MADE was built without context_features but was given a context")
        h = self.dropout(self.activation(h))
        for layer in self.hidden[1:]:
            h = self.dropout(self.activation(layer(h)))
        return self.output(h).view(x.shape[0], self.features, self.output_multiplier)
