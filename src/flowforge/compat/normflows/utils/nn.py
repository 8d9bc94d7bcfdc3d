"""normflows' ``nf.utils.nn``: small modules and tensor helpers used by its nets and flows."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

# normflows' flow ActNorm (its state: s, t, data_dep_init_done); from its module, which needs nothing of
# this package, as the ``nf.flows`` package itself imports ``nf.utils``.
from ..flows.normalization import ActNorm as FlowActNorm


class ConstScaleLayer(nn.Module):
    """``x ↦ scale · x`` with a fixed ``scale`` (a buffer)."""

    scale: torch.Tensor

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale_cpu = torch.tensor(scale)
        self.register_buffer("scale", self.scale_cpu)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input * self.scale


class ActNorm(nn.Module):
    """normflows' ActNorm as a plain module (the flow's forward output, its log-det dropped), for use
    inside conditioner networks; the flow is ``self.actNorm``."""

    def __init__(self, shape: int | Iterable[int]):
        super().__init__()
        self.actNorm = FlowActNorm(shape)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.actNorm(input)[0]


class ClampExp(nn.Module):
    """``x ↦ min(exp(x), 1)``."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.min(torch.exp(x), torch.tensor(1.0, device=x.device, dtype=x.dtype))


def _index_buffer(ind: Any) -> torch.Tensor:
    return ind.long() if torch.is_tensor(ind) else torch.tensor(list(ind), dtype=torch.long)


class PeriodicFeaturesElementwise(nn.Module):
    r"""Replace the features ``ind`` of the last axis by ``w₁ sin(s f) + w₂ cos(s f)`` (learned
    ``w``, initially 1; optional learned bias and an activation), elementwise, so the feature count
    and order stay (some information about ``f`` is lost). ``scale`` ``s``: a number or a tensor
    (one per index, a buffer)."""

    ind: torch.Tensor
    ind_: torch.Tensor
    inv_perm: torch.Tensor

    def __init__(
        self,
        ndim: int,
        ind: Iterable[int] | torch.Tensor,
        scale: float | torch.Tensor = 1.0,
        bias: bool = False,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.ndim = ndim
        self.register_buffer("ind", _index_buffer(ind))
        chosen = set(self.ind.tolist())
        self.register_buffer("ind_", torch.tensor([i for i in range(ndim) if i not in chosen], dtype=torch.long))
        self.register_buffer("inv_perm", torch.argsort(torch.cat((self.ind, self.ind_))))
        self.weights = nn.Parameter(torch.ones(len(self.ind), 2))
        if torch.is_tensor(scale):
            self.register_buffer("scale", scale)
        else:
            self.scale = scale
        self.apply_bias = bias
        if bias:
            self.bias = nn.Parameter(torch.zeros(len(self.ind)))
        self.activation = nn.Identity() if activation is None else activation

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        angles = self.scale * inputs[..., self.ind]
        periodic = self.weights[:, 0] * torch.sin(angles) + self.weights[:, 1] * torch.cos(angles)
        if self.apply_bias:
            periodic = periodic + self.bias
        periodic = self.activation(periodic)
        return torch.cat((periodic, inputs[..., self.ind_]), -1)[..., self.inv_perm]


class PeriodicFeaturesCat(nn.Module):
    """Replace the features ``ind`` of the last axis by ``[sin(s f), cos(s f)]``: the output is
    ``[sin(s f_ind), cos(s f_ind), f_rest]`` (``len(ind)`` more features, reordered)."""

    ind: torch.Tensor
    ind_: torch.Tensor

    def __init__(self, ndim: int, ind: Iterable[int] | torch.Tensor, scale: float | torch.Tensor = 1.0):
        super().__init__()
        self.ndim = ndim
        self.register_buffer("ind", _index_buffer(ind))
        chosen = set(self.ind.tolist())
        self.register_buffer("ind_", torch.tensor([i for i in range(ndim) if i not in chosen], dtype=torch.long))
        if torch.is_tensor(scale):
            self.register_buffer("scale", scale)
        else:
            self.scale = scale

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        angles = self.scale * inputs[..., self.ind]
        return torch.cat((torch.sin(angles), torch.cos(angles), inputs[..., self.ind_]), -1)


def tile(x: torch.Tensor, n: int) -> torch.Tensor:
    """Each entry of ``x`` (flattened) repeated ``n`` times in a row: ``[a, b] → [a, a, b, b]`` for 2."""
    return x.reshape(-1).repeat_interleave(n)


def sum_except_batch(x: torch.Tensor, num_batch_dims: int = 1) -> torch.Tensor:
    """Sum over all axes of ``x`` but the first ``num_batch_dims``."""
    return torch.sum(x, dim=list(range(num_batch_dims, x.dim())))


__all__ = [
    "ActNorm",
    "ClampExp",
    "ConstScaleLayer",
    "PeriodicFeaturesCat",
    "PeriodicFeaturesElementwise",
    "sum_except_batch",
    "tile",
]
