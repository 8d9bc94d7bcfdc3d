"""Base distributions ``q0``: calling one with ``num_samples`` returns ``(z, log q0(z))``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..flows.base import as_event_shape, check_event_shape
from ..utils.checks import positive_int


class BaseDistribution(nn.Module):
    """A distribution that can be sampled with its log-density and evaluated.

    ``forward(num_samples) -> (z, log_prob(z))``; ``log_prob(z) -> (batch,)``;
    ``sample(num_samples) -> z``.
    """

    shape: tuple[int, ...]

    def forward(self, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, num_samples: int = 1) -> torch.Tensor:
        return self.forward(num_samples)[0]

    def check_input(self, z: torch.Tensor) -> None:
        check_event_shape(self, z, self.shape)


class DiagGaussian(BaseDistribution):
    r"""Gaussian with diagonal covariance, ``q0(z) = N(z; μ, diag(σ²))``.

    ``μ`` (``loc``) starts at 0 and ``log σ`` (``log_scale``) at 0; both are learned
    when ``trainable`` and fixed buffers otherwise.
    """

    def __init__(self, shape: int | Iterable[int], trainable: bool = True):
        super().__init__()
        self.shape = as_event_shape(shape)
        self.dim = math.prod(self.shape)
        if trainable:
            self.loc = nn.Parameter(torch.zeros(1, *self.shape))
            self.log_scale = nn.Parameter(torch.zeros(1, *self.shape))
        else:
            self.register_buffer("loc", torch.zeros(1, *self.shape))
            self.register_buffer("log_scale", torch.zeros(1, *self.shape))

    def _log_normaliser(self) -> torch.Tensor:
        return -0.5 * self.dim * math.log(2 * math.pi) - self.log_scale.sum()

    def forward(self, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(
            (positive_int("num_samples", num_samples), *self.shape), dtype=self.loc.dtype, device=self.loc.device
        )
        z = torch.addcmul(self.loc, torch.exp(self.log_scale), eps)
        squared = (eps * eps).flatten(1).sum(1)
        return z, torch.add(self._log_normaliser(), squared, alpha=-0.5)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        eps = (z - self.loc) * torch.exp(-self.log_scale)
        return torch.add(self._log_normaliser(), (eps * eps).flatten(1).sum(1), alpha=-0.5)


class Uniform(BaseDistribution):
    """Uniform distribution on the box ``[low, high]^shape`` (not trainable)."""

    def __init__(self, shape: int | Iterable[int], low: float = -1.0, high: float = 1.0):
        super().__init__()
        if not high > low:
            raise ValueError(f"Uniform needs high > low, got low={low}, high={high}")
        self.shape = as_event_shape(shape)
        self.dim = math.prod(self.shape)
        self.register_buffer("low", torch.tensor(float(low)))
        self.register_buffer("high", torch.tensor(float(high)))

    def _log_density(self) -> torch.Tensor:
        return -self.dim * torch.log(self.high - self.low)

    def forward(self, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(
            (positive_int("num_samples", num_samples), *self.shape), dtype=self.low.dtype, device=self.low.device
        )
        z = self.low + (self.high - self.low) * u
        return z, self._log_density().expand(num_samples)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        inside = ((z >= self.low) & (z <= self.high)).flatten(1).all(1)
        return torch.where(inside, self._log_density(), -torch.inf).to(z.dtype)


class GaussianMixture(BaseDistribution):
    r"""Mixture of diagonal Gaussians ``q0(z) = Σₖ πₖ N(z; μₖ, diag(σₖ²))``.

    Args:
        n_modes: number of components K.
        dim: dimension of the event.
        loc: ``(K, dim)`` means (default: standard normal draws).
        scale: ``(K, dim)`` standard deviations (default: ones).
        weights: ``(K,)`` mixture weights, normalised here (default: uniform).
        trainable: learn means, log-scales and weight logits.
    """

    def __init__(
        self,
        n_modes: int,
        dim: int,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        trainable: bool = True,
    ):
        super().__init__()
        if n_modes < 1 or dim < 1:
            raise ValueError(f"GaussianMixture needs n_modes >= 1 and dim >= 1, got {n_modes}, {dim}")
        self.n_modes, self.dim, self.shape = n_modes, dim, (dim,)
        loc = torch.randn(n_modes, dim) if loc is None else torch.as_tensor(loc, dtype=torch.get_default_dtype())
        scale = torch.ones(n_modes, dim) if scale is None else torch.as_tensor(scale, dtype=torch.get_default_dtype())
        weights = torch.ones(n_modes) if weights is None else torch.as_tensor(weights, dtype=torch.get_default_dtype())
        for name, value, expected in (
            ("loc", loc, (n_modes, dim)),
            ("scale", scale, (n_modes, dim)),
            ("weights", weights, (n_modes,)),
        ):
            if tuple(value.shape) != expected:
                raise ValueError(f"GaussianMixture: {name} must have shape {expected}, got {tuple(value.shape)}")
        if (scale <= 0).any() or (weights <= 0).any():
            raise ValueError("GaussianMixture: scale and weights must be positive")
        values = {"loc": loc, "log_scale": torch.log(scale), "weight_logits": torch.log(weights / weights.sum())}
        for name, value in values.items():
            if trainable:
                setattr(self, name, nn.Parameter(value.clone()))
            else:
                self.register_buffer(name, value.clone())

    def forward(self, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        positive_int("num_samples", num_samples)
        probabilities = torch.softmax(self.weight_logits, 0)
        mode = torch.multinomial(probabilities.detach(), num_samples, replacement=True)
        eps = torch.randn(num_samples, self.dim, dtype=self.loc.dtype, device=self.loc.device)
        z = self.loc[mode] + torch.exp(self.log_scale[mode]) * eps
        return z, self.log_prob(z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        eps = (z.unsqueeze(1) - self.loc) * torch.exp(-self.log_scale)
        component = -0.5 * self.dim * math.log(2 * math.pi) - self.log_scale.sum(1) - 0.5 * (eps * eps).sum(2)
        return torch.logsumexp(torch.log_softmax(self.weight_logits, 0) + component, 1)
