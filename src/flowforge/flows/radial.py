"""Radial flow (Rezende & Mohamed, 2015)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .base import EventFlow, check_context


def _radial_log_det(dim: int, r: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    h = 1.0 / (alpha + r)
    beta_h = beta * h
    return (dim - 1) * torch.log1p(beta_h) + torch.log1p(beta_h * alpha * h)


def _radial_forward(flat: torch.Tensor, z_0: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor):
    """``x = z + β (z − z₀) / (α + r)`` and its log-determinant, for ``(batch, d)`` inputs and parameters
    shared by all rows or given per row (``z₀`` ``(batch, d)``, ``α`` and ``β`` ``(batch,)``)."""
    dz = flat - z_0
    r = torch.linalg.vector_norm(dz, dim=1)
    x = torch.addcmul(flat, dz, (beta / (alpha + r)).unsqueeze(1))
    return x, _radial_log_det(flat.shape[1], r, alpha, beta)


def _radial_inverse(flat: torch.Tensor, z_0: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor):
    """The inverse of :func:`_radial_forward` and its log-determinant."""
    dx = flat - z_0
    rho = torch.linalg.vector_norm(dx, dim=1)
    # r² + (α + β − ρ) r − αρ = 0; pick the form without cancellation for each sign.
    b = alpha + beta - rho
    root = torch.sqrt(b * b + 4.0 * alpha * rho)
    positive = b > 0
    r = torch.where(positive, 2.0 * alpha * rho / torch.where(positive, b + root, 1.0), 0.5 * (root - b))
    scale = (alpha + r) / (alpha + beta + r)
    return torch.addcmul(z_0, dx, scale.unsqueeze(1)), -_radial_log_det(flat.shape[1], r, alpha, beta)


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

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(z)
        x, log_det = _radial_forward(z.flatten(1), self.z_0, *self._alpha_beta())
        return x.view_as(z), log_det

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        z, log_det = _radial_inverse(x.flatten(1), self.z_0, *self._alpha_beta())
        return z.view_as(x), log_det


class ConditionalRadial(EventFlow):
    r"""Amortized radial flow: ``x = z + β(c) (z − z₀(c)) / (α(c) + ‖z − z₀(c)‖)`` with ``z₀``,
    ``α̂`` and ``β̂`` a linear function of a context ``c`` (per row), as in the VAE of Rezende &
    Mohamed (2015), where ``c`` is the encoder's output for the data point.

    The formula, the constraints ``α > 0``, ``β > −α`` and both directions (closed form) are those of
    :class:`Radial`, row by row. Starts at the identity for every context (``β(c) = 0``).

    Reference: D. Rezende, S. Mohamed, *Variational Inference with Normalizing Flows*,
    ICML 2015, https://arxiv.org/abs/1505.05770.
    """

    takes_context = True

    def __init__(self, shape: int | Iterable[int], context_features: int):
        super().__init__(shape)
        if context_features < 1:
            raise ValueError(f"context_features must be positive, got {context_features}")
        self.context_features = int(context_features)
        self.hypernet = nn.Linear(self.context_features, self.dim + 2)
        with torch.no_grad():
            # α̂ = β̂ = 0 for every context: α = log 2 and β = softplus(0) − α = 0.
            self.hypernet.weight[self.dim :].zero_()
            self.hypernet.bias[self.dim :].zero_()

    def _per_row(self, v: torch.Tensor, context: torch.Tensor | None):
        self.check_input(v)
        check_context(self, context, v.shape[0], self.context_features)
        z_0, alpha_raw, beta_raw = torch.split(self.hypernet(context), [self.dim, 1, 1], dim=1)
        alpha = F.softplus(alpha_raw[:, 0])
        return z_0, alpha, F.softplus(beta_raw[:, 0]) - alpha

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, log_det = _radial_forward(z.flatten(1), *self._per_row(z, context))
        return x.view_as(z), log_det

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_det = _radial_inverse(x.flatten(1), *self._per_row(x, context))
        return z.view_as(x), log_det

    def extra_repr(self) -> str:
        return f"shape={self.shape}, context_features={self.context_features}"
