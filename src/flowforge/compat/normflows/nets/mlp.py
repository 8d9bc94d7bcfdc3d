"""normflows' ``nf.nets.mlp``: its ``MLP`` with normflows' layer sequence (``self.net``), state_dict
layout and numerics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..utils.nn import ClampExp, ConstScaleLayer

_OUTPUT_FUNCTIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "clampexp": ClampExp}


class MLP(nn.Module):
    """normflows' ``MLP(layers, leaky=0.0, score_scale=None, output_fn=None, output_scale=None,
    init_zeros=False, dropout=None)``: linear layers ``layers[0] → … → layers[-1]`` with
    ``LeakyReLU(leaky)`` between, dropout before the last one (``dropout``), the last one zeroed
    with ``init_zeros``. With ``output_fn`` (``"sigmoid"``, ``"relu"``, ``"tanh"``, ``"clampexp"``:
    ``min(exp(x), 1)``) the output is ``output_scale · output_fn(score_scale · out)`` (the scales
    are :class:`~flowforge.compat.normflows.utils.ConstScaleLayer` buffers in ``self.net``; both are
    ignored without ``output_fn``, as in normflows).

    Difference kept from flowforge's native :class:`~flowforge.nets.MLP`, which applies
    ``output_scale · output_fn(score_scale · out / output_scale)`` (the soft clamp normflows'
    docstring describes) and ``score_scale`` without ``output_fn`` too: this class computes what
    normflows' code computes, and refuses an unknown ``output_fn`` (normflows ignores it)."""

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
        if len(layers) < 2:
            raise ValueError(f"MLP needs at least two layer widths, got {list(layers)}")
        if output_fn is not None and output_fn not in _OUTPUT_FUNCTIONS:
            raise ValueError(f"output_fn must be None or one of {sorted(_OUTPUT_FUNCTIONS)}, got {output_fn!r}")
        net: list[nn.Module] = []
        for width_in, width_out in zip(layers[:-2], layers[1:-1], strict=True):
            net += [nn.Linear(width_in, width_out), nn.LeakyReLU(leaky)]
        if dropout is not None:
            net.append(nn.Dropout(p=dropout))
        last = nn.Linear(layers[-2], layers[-1])
        if init_zeros:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        net.append(last)
        if output_fn is not None:
            if score_scale is not None:
                net.append(ConstScaleLayer(score_scale))
            net.append(_OUTPUT_FUNCTIONS[output_fn]())
            if output_scale is not None:
                net.append(ConstScaleLayer(output_scale))
        self.net = nn.Sequential(*net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


__all__ = ["MLP"]
