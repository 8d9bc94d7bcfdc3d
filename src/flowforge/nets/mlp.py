"""Fully connected conditioner networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

OUTPUT_FUNCTIONS = (None, "sigmoid", "relu", "tanh", "clampexp")


class MLP(nn.Module):
    """A multilayer perceptron ``layers[0] -> … -> layers[-1]`` with (leaky) ReLU between layers.

    The argument order and meaning follow normflows, so ``nf.nets.MLP([2, 64, 64, 4], init_zeros=True)``
    works unchanged.

    Args:
        layers: widths from input to output, at least two.
        leaky: negative slope of the leaky ReLU; 0 gives a plain ReLU.
        score_scale: factor applied to the last linear layer's output, before ``output_fn``.
        output_fn: None, ``"sigmoid"``, ``"relu"``, ``"tanh"`` or ``"clampexp"`` (``exp(min(x, 0))``).
        output_scale: with ``output_fn``, the output is ``output_scale * output_fn(out / output_scale)``
            (a soft clamp to ``±output_scale`` for tanh).
        init_zeros: zero the last layer, so a coupling built on this net starts at the identity
            (Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039).
        dropout: dropout probability before the last layer.
    """

    def __init__(
        self,
        layers: Sequence[int],
        leaky: float = 0.0,
        score_scale: float | None = None,
        output_fn: str | None = None,
        output_scale: float | None = None,
        init_zeros: bool = False,
        dropout: float | None = None,
    ):
        super().__init__()
        layers = [int(width) for width in layers]
        if len(layers) < 2 or any(width < 1 for width in layers):
            raise ValueError(f"MLP needs at least two positive layer widths, got {layers}")
        if output_fn not in OUTPUT_FUNCTIONS:
            raise ValueError(f"output_fn must be one of {OUTPUT_FUNCTIONS}, got {output_fn!r}")
        modules: list[nn.Module] = []
        for width_in, width_out in zip(layers[:-2], layers[1:-1], strict=True):
            modules += [nn.Linear(width_in, width_out), nn.LeakyReLU(leaky) if leaky else nn.ReLU()]
        if dropout is not None:
            modules.append(nn.Dropout(dropout))
        last = nn.Linear(layers[-2], layers[-1])
        if init_zeros:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        modules.append(last)
        self.net = nn.Sequential(*modules)
        self.in_features, self.out_features = layers[0], layers[-1]
        self.score_scale, self.output_fn, self.output_scale = score_scale, output_fn, output_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.score_scale is not None:
            out = out * self.score_scale
        if self.output_fn is None:
            return out
        scale = self.output_scale if self.output_scale is not None else 1.0
        out = out / scale
        if self.output_fn == "sigmoid":
            out = torch.sigmoid(out)
        elif self.output_fn == "relu":
            out = torch.relu(out)
        elif self.output_fn == "tanh":
            out = torch.tanh(out)
        else:
            out = torch.exp(torch.clamp(out, max=0.0))
        return out * scale
