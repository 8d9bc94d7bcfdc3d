"""normflows' ``nf.distributions.decoder`` path: the decoders ``p(x | z)`` of its flow VAEs.

``forward(z)`` returns the distribution's parameters, ``log_prob(x, z)`` the log-likelihood of one
``x`` row per ``z`` row; when ``z`` has ``k`` times as many rows as ``x`` (several latents per data
point, flattened batch-major), each ``x`` row is repeated ``k`` times.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LOG_2PI = math.log(2 * math.pi)


class BaseDecoder(nn.Module):
    """normflows' interface of a decoder: ``forward(z)`` (the parameters of ``p(x | z)``) and
    ``log_prob(x, z)``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _rows_like(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``x`` with each row repeated ``len(z) // len(x)`` times, consecutively, so it lines up with ``z``."""
    if len(z) == len(x):
        return x
    if len(z) % len(x):
        raise ValueError(f"z has {len(z)} rows, not a multiple of x's {len(x)}")
    return x.repeat_interleave(len(z) // len(x), dim=0)


class NNDiagGaussianDecoder(BaseDecoder):
    r"""normflows' ``NNDiagGaussianDecoder(net)``: ``p(x | z) = N(x; μ(z), diag σ²(z))`` with
    ``[μ, log σ²] = net(z)`` split in halves along dimension 1. ``forward`` returns ``(μ, σ)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def _mean_log_var(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(z)
        if out.shape[1] % 2:
            raise ValueError(
                f"NNDiagGaussianDecoder: net must return an even number of features, got {tuple(out.shape)}"
            )
        mean, log_var = out.chunk(2, dim=1)
        return mean, log_var

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self._mean_log_var(z)
        return mean, torch.exp(0.5 * log_var)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)``, shape ``(len(z),)``. As in normflows, the constant counts ``z``'s features
        (``−½ prod(z.shape[1:]) log 2π``)."""
        mean, log_var = self._mean_log_var(z)
        x = _rows_like(x, z)
        dims = list(range(1, z.dim()))
        return -0.5 * math.prod(z.shape[1:]) * _LOG_2PI - 0.5 * torch.sum(
            log_var + (x - mean) ** 2 * torch.exp(-log_var), dims
        )


class NNBernoulliDecoder(BaseDecoder):
    r"""normflows' ``NNBernoulliDecoder(net)``: ``p(x | z) = Π Bernoulli(xᵢ; sigmoid(net(z)ᵢ))``;
    ``forward`` returns the means ``sigmoid(net(z))``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``Σ x log σ(s) + (1 − x) log σ(−s)``, ``s = net(z)``, shape ``(len(z),)``."""
        score = self.net(z)
        x = _rows_like(x, z)
        dims = list(range(1, x.dim()))
        return torch.sum(x * F.logsigmoid(score) + (1 - x) * F.logsigmoid(-score), dims)


__all__ = ["BaseDecoder", "NNBernoulliDecoder", "NNDiagGaussianDecoder"]
