"""Lipschitz-constrained networks for residual flows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SpectralNormLinear(nn.Linear):
    r"""A linear layer whose weight is rescaled to spectral norm at most ``coefficient``:
    ``W̃ = W / max(1, σ(W)/c)`` (Miyato et al. 2018; Behrmann et al. 2019).

    ``σ`` is exact (the largest singular value, differentiable) when ``exact`` (by default for
    layers up to 512 wide, where it costs microseconds), so the bound holds whatever the weights
    did. Wider layers estimate it by power iteration whose vectors are buffers, advanced only by
    :meth:`update_norm`, which :func:`flowforge.nets.update_lipschitz` calls on every such layer of
    a model (and the loops of :mod:`flowforge.training`, ``fit`` and ``fit_data``, after every
    step), so every evaluation between two updates uses the same weight.
    """

    left: torch.Tensor
    right: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        coefficient: float = 0.97,
        init_zeros: bool = False,
        n_iterations: int = 5,
        exact: bool | None = None,
    ):
        super().__init__(in_features, out_features)
        if not 0 < coefficient < 1:
            raise ValueError(f"coefficient must be in (0, 1), got {coefficient}")
        self.coefficient, self.n_iterations = coefficient, n_iterations
        self.exact = max(in_features, out_features) <= 512 if exact is None else exact
        if init_zeros:
            nn.init.normal_(self.weight, std=1e-3)
            nn.init.zeros_(self.bias)
        self.register_buffer("left", F.normalize(torch.randn(out_features), dim=0))
        self.register_buffer("right", F.normalize(torch.randn(in_features), dim=0))
        self.update_norm(20)

    @torch.no_grad()
    def update_norm(self, n_iterations: int | None = None) -> None:
        if self.exact:
            return
        for _ in range(self.n_iterations if n_iterations is None else n_iterations):
            self.right.copy_(F.normalize(self.weight.T @ self.left, dim=0, eps=1e-12))
            self.left.copy_(F.normalize(self.weight @ self.right, dim=0, eps=1e-12))

    def normalized_weight(self) -> torch.Tensor:
        if self.exact:
            sigma = torch.linalg.matrix_norm(self.weight, ord=2)
        else:
            sigma = torch.dot(self.left, self.weight @ self.right)
        return self.weight / torch.clamp(sigma / self.coefficient, min=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class LipSwish(nn.Module):
    r"""``x σ(βx) / 1.1`` with learned ``β > 0``: Lipschitz constant at most 1 (Chen et al. 2019)."""

    def __init__(self):
        super().__init__()
        self.beta_raw = nn.Parameter(torch.tensor(math.log(math.e - 1)))  # β = 1 at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(F.softplus(self.beta_raw) * x) / 1.1


class LipschitzMLP(nn.Module):
    """An MLP ``channels[0] -> … -> channels[-1]`` with Lipschitz constant below ``lipschitz_const``:
    spectrally normalised linear layers and :class:`LipSwish` activations. Argument order as
    normflows; each :func:`~flowforge.nets.update_lipschitz` call without a count runs
    ``max_lipschitz_iter`` power iterations."""

    def __init__(
        self,
        channels: Sequence[int],
        lipschitz_const: float = 0.97,
        max_lipschitz_iter: int = 5,
        lipschitz_tolerance: float | None = None,
        init_zeros: bool = True,
    ):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"LipschitzMLP needs at least two widths, got {list(channels)}")
        layers: list[nn.Module] = []
        for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            last = index == len(channels) - 2
            layers.append(SpectralNormLinear(c_in, c_out, lipschitz_const, init_zeros and last, max_lipschitz_iter))
            if not last:
                layers.append(LipSwish())
        self.net = nn.Sequential(*layers)
        self.in_features, self.out_features = channels[0], channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
