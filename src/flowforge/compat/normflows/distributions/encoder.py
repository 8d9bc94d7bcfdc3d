"""normflows' ``nf.distributions.encoder`` path: the encoders ``q(z | x)`` of its flow VAEs.

An encoder maps a batch ``x`` to ``num_samples`` latents per row: ``forward(x, num_samples)`` returns
``z`` of shape ``(batch, num_samples, *latent)`` and ``log q(z | x)`` of shape ``(batch, num_samples)``;
``log_prob(z, x)`` evaluates it. (flowforge's own VAE, :class:`flowforge.vae.FlowVAE`, builds its
encoder from a network; these classes keep normflows' interface.)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ....utils.checks import positive_int

_LOG_2PI = math.log(2 * math.pi)


class BaseEncoder(nn.Module):
    """normflows' interface of an encoder: ``forward(x, num_samples=1) -> (z, log q(z | x))`` with ``z``
    of shape ``(batch, num_samples, ...)``, and ``log_prob(z, x)``."""

    def forward(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _repeated(x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``x`` ``(batch, features)`` repeated to ``(batch, num_samples, features)``."""
    if x.dim() != 2:
        raise ValueError(f"expected x of shape (batch, features), got {tuple(x.shape)}")
    return x.unsqueeze(1).repeat(1, positive_int("num_samples", num_samples), 1)


class Dirac(BaseEncoder):
    """normflows' ``Dirac()``: the latent is the input itself, ``z = x``, with ``log q = 0``."""

    def forward(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        z = _repeated(x, num_samples)
        return z, z.new_zeros(z.shape[:2])

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(z.shape[:2])


class Uniform(BaseEncoder):
    """normflows' encoder ``Uniform(zmin=0.0, zmax=1.0)``: latents uniform on ``[zmin, zmax]^features``
    whatever ``x`` (which only gives the batch size and shape), ``log q = −log(zmax − zmin)`` (as in
    normflows, per sample, not multiplied by the number of features)."""

    def __init__(self, zmin: float = 0.0, zmax: float = 1.0):
        super().__init__()
        if not zmax > zmin:
            raise ValueError(f"Uniform encoder needs zmax > zmin, got {zmin}, {zmax}")
        self.zmin, self.zmax = zmin, zmax
        self.log_q = -math.log(zmax - zmin)

    def forward(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        z = _repeated(x, num_samples).uniform_(self.zmin, self.zmax)
        return z, z.new_full(z.shape[:2], self.log_q)

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return z.new_full(z.shape[:2], self.log_q)


class ConstDiagGaussian(BaseEncoder):
    r"""normflows' ``ConstDiagGaussian(loc, scale)``: ``q(z | x) = N(z; loc, diag scale²)``, the same for
    every ``x``. Parameters ``loc`` ``(1, 1, d)`` and ``scale`` ``(d,)`` as in normflows (``scale``
    is the standard deviation itself, learned unconstrained)."""

    def __init__(self, loc: Any, scale: Any):
        super().__init__()
        loc, scale = torch.as_tensor(loc), torch.as_tensor(scale)
        if loc.dim() != 1 or scale.shape != loc.shape:
            raise ValueError(
                "ConstDiagGaussian needs loc and scale vectors of one shape, "
                f"got {tuple(loc.shape)}, {tuple(scale.shape)}"
            )
        self.d = len(loc)
        self.loc = nn.Parameter(loc.reshape((1, 1, self.d)))
        self.scale = nn.Parameter(scale)

    def forward(self, x: torch.Tensor | None = None, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_samples`` latents per row of ``x`` (one row when ``x`` is None)."""
        batch_size = 1 if x is None else len(x)
        eps = torch.randn(
            (batch_size, positive_int("num_samples", num_samples), self.d), dtype=self.loc.dtype, device=self.loc.device
        )
        z = self.loc + self.scale * eps
        log_q = -0.5 * self.d * _LOG_2PI - torch.sum(torch.log(self.scale) + 0.5 * eps.square(), 2)
        return z, log_q

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log q(z)`` for ``z`` of shape ``(batch, num_samples, d)`` (or ``(num_samples, d)``, ``(d,)``)."""
        while z.dim() < 3:
            z = z.unsqueeze(0)
        return -0.5 * self.d * _LOG_2PI - torch.sum(torch.log(self.scale) + 0.5 * ((z - self.loc) / self.scale) ** 2, 2)


class NNDiagGaussian(BaseEncoder):
    r"""normflows' ``NNDiagGaussian(net)``: ``q(z | x) = N(z; μ(x), diag σ²(x))`` with
    ``[μ, log σ²] = net(x)`` split in halves along dimension 1 (the amortised Gaussian encoder of a
    VAE, Kingma & Welling 2014)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def _mean_log_var(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        if out.shape[1] % 2:
            raise ValueError(f"NNDiagGaussian: net must return an even number of features, got {tuple(out.shape)}")
        mean, log_var = out.chunk(2, dim=1)
        return mean.unsqueeze(1), log_var.unsqueeze(1)

    def forward(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self._mean_log_var(x)
        eps = torch.randn(
            (len(x), positive_int("num_samples", num_samples), *mean.shape[2:]), dtype=mean.dtype, device=mean.device
        )
        z = mean + torch.exp(0.5 * log_var) * eps
        dims = list(range(2, z.dim()))
        log_q = -0.5 * math.prod(z.shape[2:]) * _LOG_2PI - torch.sum(0.5 * log_var + 0.5 * eps.square(), dims)
        return z, log_q

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log q(z | x)`` for ``z`` of shape ``(batch, num_samples, d)`` (as in normflows, summed over
        dimension 2)."""
        while z.dim() < 3:
            z = z.unsqueeze(0)
        mean, log_var = self._mean_log_var(x)
        return -0.5 * math.prod(z.shape[2:]) * _LOG_2PI - 0.5 * torch.sum(
            log_var + (z - mean) ** 2 * torch.exp(-log_var), 2
        )


__all__ = ["BaseEncoder", "ConstDiagGaussian", "Dirac", "NNDiagGaussian", "Uniform"]
