"""MADE: a masked autoencoder whose ``i``-th outputs depend only on inputs ``< i`` in an order."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.deprecation import retired_keywords

RETIRED_KEYWORDS = {
    "use_batch_norm": "flowforge's MADE has no batch norm (True was refused); put flows.BatchNorm between flows",
}


def refuse_batch_norm(use_batch_norm: bool) -> None:
    """Raise for ``use_batch_norm=True`` (normflows' MADE option), which flowforge's MADE does not have."""
    if use_batch_norm:
        raise ValueError("use_batch_norm is not supported by flowforge's MADE; put flows.BatchNorm between flows")


def check_retired_arguments(owner: str, retired: dict) -> None:
    """Warn for normflows' leftover MADE keywords given to ``owner`` (``use_batch_norm``) and refuse
    ``use_batch_norm=True``."""
    retired_keywords(owner, retired, RETIRED_KEYWORDS)
    refuse_batch_norm(retired.get("use_batch_norm", False))


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer)."""

    mask: torch.Tensor

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(f"mask must have shape {(out_features, in_features)}, got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


Activation = Callable[[torch.Tensor], torch.Tensor] | type[nn.Module]
"""An activation function (``F.relu``) or a module class (``nn.ReLU``)."""


def as_activation(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """Accept an activation class (``nn.ReLU``) or a function (``F.relu``), as normflows users pass both."""
    return activation() if isinstance(activation, type) else activation


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation (Germain et al. 2015, https://arxiv.org/abs/1502.03509).

    Maps ``x ∈ R^D`` (and an optional context ``c``) to ``D × output_multiplier`` outputs, where the
    outputs of feature ``i`` depend only on the features before it in the autoregressive order and
    on ``c``. Hidden units get degrees ``1 … D−1`` cyclically; a connection ``j → k`` exists when
    ``degree(k) ≥ degree(j)`` (hidden) or ``degree(k) > degree(j)`` (output). With
    ``use_residual_blocks`` the hidden layers are residual blocks ``h + W₂ act(W₁ act(h) + V c)``
    (masks keep them autoregressive); otherwise plain layers. The context enters unmasked. The
    output layer starts at zero, so a flow built on it starts at the identity. The first nine
    arguments are in the order of nflows' MADE.

    Output shape: ``(batch, features, output_multiplier)``. With ``parameter_major`` the output
    layer's rows are ordered parameter by parameter (all features' first outputs, then the second
    ...), so ``output[..., j]`` is contiguous along the features, which elementwise maps that use
    each parameter as a whole (affine: shift and scale) read faster; the values are the same.
    :meth:`feature_outputs` computes one feature's outputs alone, as sequential sampling needs.

    Args:
        features: D.
        hidden_features: width of each hidden layer.
        context_features: size of the context vector, or None.
        num_blocks: number of hidden layers (or residual blocks).
        output_multiplier: parameters per feature (2 for affine: shift and log-scale).
        use_residual_blocks: residual hidden blocks.
        random_mask: draw a random autoregressive order (ignored when ``order`` is given).
        activation: activation class or function; dropout_probability: dropout in hidden layers.
        order: a permutation of ``range(D)``; ``order[i]`` is feature ``i``'s position in the
            autoregressive sequence, so its outputs see the features with smaller positions
            (default: ``0, 1, …, D−1``). Kept as the buffer ``order``.
        parameter_major: the output layer's row order (see above).
    """

    order: torch.Tensor

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        output_multiplier: int = 1,
        use_residual_blocks: bool = True,
        random_mask: bool = False,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        *,
        order: torch.Tensor | None = None,
        parameter_major: bool = False,
        **retired,
    ):
        super().__init__()
        check_retired_arguments("nets.MADE", retired)
        if features < 1 or hidden_features < 1 or num_blocks < 1 or output_multiplier < 1:
            raise ValueError("MADE sizes must be positive")
        if order is None:
            order = torch.randperm(features) if random_mask else torch.arange(features)
        order = torch.as_tensor(order)
        if sorted(order.tolist()) != list(range(features)):
            raise ValueError(f"order must be a permutation of range({features}), got {order.tolist()}")
        self.features, self.context_features, self.output_multiplier = features, context_features, output_multiplier
        self.residual, self.parameter_major = use_residual_blocks, parameter_major
        self.register_buffer("order", order.clone())
        self._set_sequence()
        input_degrees = order + 1
        hidden_degrees = torch.arange(hidden_features) % max(features - 1, 1) + 1
        hidden_mask = hidden_degrees[:, None] >= hidden_degrees[None, :]
        self.first = MaskedLinear(features, hidden_features, hidden_degrees[:, None] >= input_degrees[None, :])
        count = num_blocks if use_residual_blocks else num_blocks - 1
        self.hidden = nn.ModuleList(MaskedLinear(hidden_features, hidden_features, hidden_mask) for _ in range(count))
        self.second = (
            nn.ModuleList(MaskedLinear(hidden_features, hidden_features, hidden_mask) for _ in range(count))
            if use_residual_blocks
            else None
        )
        self.context = nn.Linear(context_features, hidden_features) if context_features else None
        output_degrees = (
            input_degrees.repeat(output_multiplier)
            if parameter_major
            else input_degrees.repeat_interleave(output_multiplier)
        )
        self.output = MaskedLinear(
            hidden_features, features * output_multiplier, output_degrees[:, None] > hidden_degrees[None, :]
        )
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self.activation = as_activation(activation)
        self.dropout = nn.Dropout(dropout_probability)

    def _set_sequence(self) -> None:
        # The features in autoregressive order, as Python ints (sampling loops over them).
        self.sequence = tuple(torch.argsort(self.order).tolist())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._set_sequence()

    def hidden_state(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden layer's activations ``(batch, hidden_features)``, the output layer's input."""
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(f"MADE expects input of shape (batch, {self.features}), got {tuple(x.shape)}")
        h = self.first(x)
        if self.context is not None:
            if context is None or context.shape != (x.shape[0], self.context_features):
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"MADE expects a context of shape ({x.shape[0]}, {self.context_features}), got {got}")
            h = h + self.context(context)
        elif context is not None:
            raise ValueError("this MADE was built without context_features but was given a context")
        if self.second is None:
            h = self.dropout(self.activation(h))
            for layer in self.hidden:
                h = self.dropout(self.activation(layer(h)))
        else:
            for first, second in zip(self.hidden, self.second, strict=True):
                h = h + second(self.dropout(self.activation(first(self.activation(h)))))
            h = self.activation(h)
        return h

    def feature_outputs(self, hidden: torch.Tensor, feature: int) -> torch.Tensor:
        """Feature ``feature``'s outputs ``(batch, 1, output_multiplier)`` from :meth:`hidden_state`,
        computing only that feature's rows of the output layer."""
        multiplier = self.output_multiplier
        rows = (
            slice(feature, None, self.features)
            if self.parameter_major
            else slice(feature * multiplier, (feature + 1) * multiplier)
        )
        layer = self.output
        return F.linear(hidden, layer.weight[rows] * layer.mask[rows], layer.bias[rows]).unsqueeze(1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        out = self.output(self.hidden_state(x, context))
        if self.parameter_major:
            return out.view(x.shape[0], self.output_multiplier, self.features).transpose(1, 2)
        return out.view(x.shape[0], self.features, self.output_multiplier)
