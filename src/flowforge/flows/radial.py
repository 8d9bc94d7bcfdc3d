"""Radial flow (Rezende & Mohamed, 2015)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .base import EventFlow


class Radial(EventFlow):
    r"""Radial flow ``x = z + β h(α, r) (z − z₀)`` with ``r = ‖z − z₀‖``, ``h = 1 / (α + r)``.

    ``log|det ∂x/∂z| = (d − 1) log(1 + βh) + log(1 + βα h²)``. The parameters are
    ``α = softplus(α̂) > 0`` and ``β = −α + softplus(β̂) > −α``, which makes the map
    invertible (Rezende & Mohamed 2015, appendix A).

    Cheap direction: ``forward`` in closed form. ``inverse``: the radius satisfies
    ``ρ = ‖x − z₀‖ = r (1 + β / (α + r))``, a quadratic in ``r`` solved in the
    cancellation-free form, so the inverse is exact to float precision rather than
    iterative; then ``z = z₀ + (x − z₀)(α + r) / (α + β + r)``.

    Reference: D. Rezende, S. Mohamed, *Variational Inference with Normalizing Flows*,
    ICML 2015, https://arxiv.org/abs/1505.05770.
    """

    def __init__(self, shape: int | Iterable[int], z_0: torch.Tensor | None = None):
        super().__init__(shape)
        if z_0 is None:
            z_0 = torch.randn(self.dim)
        else:
            z_0 = torch.as_tensor(z_0, dtype=torch.get_default_dtype())
            if z_0.numel() != self.dim:
                raise ValueError(
                    f"Radial: z_0 must have {self.dim} elements for shape {self.shape}, got {tuple(z_0.shape)}"
                )
        bound = 1.0 / self.dim
        self.z_0 = nn.Parameter(z_0.reshape(self.dim).clone())
        self.alpha_raw = nn.Parameter(torch.empty(1).uniform_(-bound, bound))
        self.beta_raw = nn.Parameter(torch.empty(1).uniform_(-bound, bound))

    def _alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = F.softplus(self.alpha_raw)
        return alpha, F.softplus(self.beta_raw) - alpha

    def _log_det(self, r: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        h = 1.0 / (alpha + r)
        beta_h = beta * h
        return (self.dim - 1) * torch.log1p(beta_h) + torch.log1p(beta_h * alpha * h)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(z)
        alpha, beta = self._alpha_beta()
        dz = z.flatten(1) - self.z_0
        r = torch.linalg.vector_norm(dz, dim=1)
        x = torch.addcmul(z.flatten(1), dz, (beta / (alpha + r)).unsqueeze(1))
        return x.view_as(z), self._log_det(r, alpha, beta)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        alpha, beta = self._alpha_beta()
        dx = x.flatten(1) - self.z_0
        rho = torch.linalg.vector_norm(dx, dim=1)
        # r² + (α + β − ρ) r − αρ = 0; pick the form without cancellation for each sign.
        b = alpha + beta - rho
        root = torch.sqrt(b * b + 4.0 * alpha * rho)
        positive = b > 0
        r = torch.where(positive, 2.0 * alpha * rho / torch.where(positive, b + root, 1.0), 0.5 * (root - b))
        scale = (alpha + r) / (alpha + beta + r)
        z = torch.addcmul(self.z_0, dx, scale.unsqueeze(1))
        return z.view_as(x), -self._log_det(r, alpha, beta)
