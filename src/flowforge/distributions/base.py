"""Base distributions ``q0``: calling one with ``num_samples`` returns ``(z, log q0(z))``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Protocol

import torch
from torch import nn

from ..flows.base import as_event_shape, check_event_shape
from ..utils.checks import positive_int


def context_rows(owner: object, context: torch.Tensor, rows: int, like: torch.Tensor) -> torch.Tensor:
    """A context as ``(rows, features)`` in ``like``'s dtype and device. A 1-D context is one context
    for every row; a 2-D one must have ``rows`` rows (no other broadcasting); NaN or inf is refused."""
    if not isinstance(context, torch.Tensor) or context.dim() not in (1, 2):
        got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
        raise ValueError(f"{type(owner).__name__}: context must be (features,) or (batch, features), got {got}")
    if context.dim() == 1:
        context = context.unsqueeze(0).expand(rows, -1)
    elif context.shape[0] != rows:
        raise ValueError(
            f"{type(owner).__name__}: context has {context.shape[0]} rows for {rows} samples; "
            "give one row per sample, or a 1-D context for all of them"
        )
    # Integer or boolean features become the model's floats (labels never get here: a class-conditional
    # base prepares its own context).
    context = context.to(device=like.device, dtype=like.dtype if like.is_floating_point() else context.dtype)
    # The finiteness check reads a value back (a data-dependent branch): under torch.compile it is
    # skipped, and the training loops check the contexts once before compiling.
    if context.is_floating_point() and not torch.compiler.is_compiling() and not torch.isfinite(context).all():
        raise ValueError(f"{type(owner).__name__}: context contains NaN or inf")
    return context


class ConditionalBase(Protocol):
    """How a base with ``takes_context = True`` is called: the context (already prepared by
    :meth:`BaseDistribution.prepare_context`) comes second."""

    def __call__(self, num_samples: int, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor: ...


class BaseDistribution(nn.Module):
    """A distribution that can be sampled with its log-density and evaluated.

    ``forward(num_samples) -> (z, log_prob(z))``; ``log_prob(z) -> (batch,)``;
    ``sample(num_samples) -> z``. A conditional base declares ``takes_context = True`` and takes the
    context as a second argument in ``forward`` and ``log_prob``.

    Attributes:
        takes_context: whether the base is conditional (the model then passes it the context).
        reparameterized: whether samples are a differentiable function of the parameters given the
            noise. A base sampled by accept/reject sets False and provides ``proposal_log_prob``, so
            the reverse-KL loss can add the score term of the selection (:func:`flowforge.losses.reverse_kl`).
    """

    shape: tuple[int, ...]
    takes_context: bool = False
    reparameterized: bool = True

    def prepare_context(
        self, context: torch.Tensor, rows: int, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The context as this base takes it and as the layers take it. Default: the same
        ``(rows, features)`` tensor for both (see :func:`context_rows`); a class-conditional base
        takes label indices and gives the layers one-hot rows."""
        context = context_rows(self, context, rows, like)
        return context, context

    def default_context(self, rows: int, like: torch.Tensor) -> torch.Tensor | None:
        """The context used when sampling without one (None: no context; a class-conditional base
        draws random classes)."""
        return None

    def proposal_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log π(z)`` of the reparameterised proposal of a base with ``reparameterized = False``."""
        raise NotImplementedError(f"{type(self).__name__} is reparameterised: it has no separate proposal")

    def forward(self, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def from_noise(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log q0(z))`` for standard normal draws ``eps`` of shape ``(n, *shape)``: the map that
        :meth:`forward` applies to its own draws (:mod:`flowforge.export` traces it, with the noise
        as an input). Bases that are no map of standard normal noise (mixtures, accept/reject,
        uniforms) raise :class:`NotImplementedError`."""
        raise NotImplementedError(f"{type(self).__name__} does not draw its samples as a map of standard normal noise")

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

    loc: torch.Tensor
    log_scale: torch.Tensor

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
        return self.from_noise(eps)

    def from_noise(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = μ + σ ε`` and ``log q0(z)`` for standard normal ``eps`` ``(n, *shape)``, as :meth:`forward`."""
        self.check_input(eps)
        z = torch.addcmul(self.loc, torch.exp(self.log_scale), eps)
        squared = (eps * eps).flatten(1).sum(1)
        return z, torch.add(self._log_normaliser(), squared, alpha=-0.5)

    def _sampling_log_scale(self) -> torch.Tensor:
        """The ``log σ`` that :meth:`forward` samples with (a subclass may temper it)."""
        return self.log_scale

    def noise(self, num_samples: int) -> torch.Tensor:
        """The standard normal draws behind ``num_samples`` samples, in :meth:`forward`'s order: the
        pictures' fast path (:func:`flowforge.plot.sample_histogram`) maps them with :meth:`column_map`."""
        return torch.randn((num_samples, *self.shape), dtype=self.loc.dtype, device=self.loc.device)

    @torch.no_grad()
    def column_map(self) -> Callable[[torch.Tensor], None]:
        """The map from :meth:`noise` to samples, in place on a block of draws held as columns
        ``(dim, n)``: ``z = μ + σ ε``, as in :meth:`forward`."""
        scale, loc = torch.exp(self._sampling_log_scale()).reshape(-1, 1), self.loc.reshape(-1, 1)

        def scale_and_shift(columns: torch.Tensor) -> None:
            columns.mul_(scale).add_(loc)

        return scale_and_shift

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        eps = (z - self.loc) * torch.exp(-self.log_scale)
        return torch.add(self._log_normaliser(), (eps * eps).flatten(1).sum(1), alpha=-0.5)


class Uniform(BaseDistribution):
    """Uniform distribution on the box ``[low, high]^shape`` (not trainable)."""

    low: torch.Tensor
    high: torch.Tensor

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

    loc: torch.Tensor
    log_scale: torch.Tensor
    weight_logits: torch.Tensor

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


class TemperedGaussian(BaseDistribution):
    r"""Isotropic Gaussian with a learned temperature: ``q0(z) = N(z; 0, T² I)``, ``log T`` a parameter
    (a buffer when not ``trainable``).

    A single scale for the whole base, as Boltzmann-generator and VI users fit it when the flow
    should do the shaping and the base only its overall spread. Sampling at another temperature
    (``NormalizingFlow.sample(n, temperature=τ)``) multiplies ``T`` by ``τ``.
    """

    def __init__(self, shape: int | Iterable[int], temperature: float = 1.0, trainable: bool = True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.shape = as_event_shape(shape)
        self.dim = math.prod(self.shape)
        value = torch.tensor(math.log(temperature))
        if trainable:
            self.log_temperature = nn.Parameter(value)
        else:
            self.register_buffer("log_temperature", value)

    @property
    def log_scale(self) -> torch.Tensor:
        """``log T``, broadcast over the event (the name tempering looks for)."""
        return self.log_temperature

    def _log_normaliser(self) -> torch.Tensor:
        return -0.5 * self.dim * math.log(2 * math.pi) - self.dim * self.log_temperature

    def forward(self, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        like = self.log_temperature
        eps = torch.randn((positive_int("num_samples", num_samples), *self.shape), dtype=like.dtype, device=like.device)
        return self.from_noise(eps)

    def from_noise(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = T ε`` and ``log q0(z)`` for standard normal ``eps`` ``(n, *shape)``, as :meth:`forward`."""
        self.check_input(eps)
        return torch.exp(self.log_temperature) * eps, self._log_normaliser() - 0.5 * (eps * eps).flatten(1).sum(1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        eps = z * torch.exp(-self.log_temperature)
        return self._log_normaliser() - 0.5 * (eps * eps).flatten(1).sum(1)


class ResampledGaussian(BaseDistribution):
    r"""Gaussian resampled by a learned acceptance function (learned accept/reject sampling,
    Stimper, Schölkopf & Hernández-Lobato 2022, https://arxiv.org/abs/2110.15828).

    Proposals ``z ~ π = N(μ, diag σ²)`` are accepted with probability ``a(z) = sigmoid(net(z))``;
    after ``T − 1`` rejections the ``T``-th proposal is taken. The density is

        ``q0(z) = π(z) ((1 − α_T) a(z) / Z + α_T)``,  ``Z = E_π[a]``,  ``α_T = (1 − Z)^(T−1)``.

    ``Z`` is a Monte Carlo mean of ``a`` over ``num_z_samples`` fresh proposals: in training mode
    every call draws them (the gradient reaches ``a`` and ``π`` through them) and updates a running
    average with weight ``eps``; in evaluation mode the running average is used (estimated from
    ``2^14`` proposals the first time). A base that can put holes and several modes into ``q0``
    lets a flow fit multimodal and disconnected targets with fewer layers.

    Args:
        shape: event shape.
        acceptance: a module mapping ``(batch, *shape)`` to ``(batch, 1)`` logits.
        truncation: ``T``, the most proposals per sample.
        eps: weight of a new estimate in the running average of ``Z``.
        num_z_samples: proposals per training-mode estimate of ``Z``.
        trainable: learn ``μ`` and ``log σ`` of the proposal.
    """

    reparameterized = False
    z_running: torch.Tensor
    acceptance_net: nn.Module

    def __init__(
        self,
        shape: int | Iterable[int],
        acceptance: nn.Module,
        truncation: int = 100,
        eps: float = 0.05,
        num_z_samples: int = 512,
        trainable: bool = True,
    ):
        super().__init__()
        self.proposal = DiagGaussian(shape, trainable)
        self.shape, self.dim = self.proposal.shape, self.proposal.dim
        self.acceptance_net = acceptance
        self.truncation = positive_int("truncation", truncation)
        self.num_z_samples = positive_int("num_z_samples", num_z_samples)
        if not 0 < eps <= 1:
            raise ValueError(f"eps must lie in (0, 1], got {eps}")
        self.eps = float(eps)
        self.register_buffer("z_running", torch.tensor(-1.0))  # negative: not estimated yet

    @property
    def log_scale(self) -> torch.Tensor:
        """The proposal's ``log σ`` (tempering scales the proposal)."""
        return self.proposal.log_scale

    def acceptance(self, z: torch.Tensor) -> torch.Tensor:
        """``a(z)`` in ``(0, 1)``, shape ``(batch,)``."""
        logits = self.acceptance_net(z)
        if logits.shape != (z.shape[0], 1):
            raise ValueError(
                f"ResampledGaussian: acceptance must map a batch to logits of shape ({z.shape[0]}, 1), "
                f"got {tuple(logits.shape)}"
            )
        return torch.sigmoid(logits[:, 0])

    def _estimate_z(self, count: int) -> torch.Tensor:
        return self.acceptance(self.proposal.sample(count)).mean()

    def normaliser(self) -> torch.Tensor:
        """``Z = E_π[a]``: a fresh estimate in training mode (and the running average updated), the
        running average otherwise."""
        if self.training:
            estimate = self._estimate_z(self.num_z_samples)
            with torch.no_grad():
                first = self.z_running < 0
                self.z_running.copy_(torch.where(first, estimate, torch.lerp(self.z_running, estimate, self.eps)))
            return estimate
        if float(self.z_running) < 0:
            with torch.no_grad():
                self.z_running.copy_(self._estimate_z(2**14))
        return self.z_running

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        return self._log_prob(z, self.normaliser())

    def proposal_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log π(z)``, the reparameterised part of ``log q0``; reverse-KL losses add the score term
        of the rest (:func:`flowforge.losses.reverse_kl`), which sampling by accept/reject does not carry."""
        return self.proposal.log_prob(z)

    def _log_prob(self, z: torch.Tensor, normaliser: torch.Tensor) -> torch.Tensor:
        alpha = (1 - normaliser) ** (self.truncation - 1)
        mixture = (1 - alpha) * self.acceptance(z) / normaliser + alpha
        return self.proposal.log_prob(z) + torch.log(mixture)

    def forward(self, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        positive_int("num_samples", num_samples)
        normaliser = self.normaliser()
        z = self.proposal.sample(num_samples)
        waiting = torch.arange(num_samples, device=z.device)
        # Each round tests the current proposal of every sample not yet accepted and redraws the
        # rejected ones; after T − 1 rejections the T-th proposal stays, whatever a says.
        for _ in range(self.truncation - 1):
            accepted = torch.rand(waiting.shape[0], dtype=z.dtype, device=z.device) < self.acceptance(z[waiting])
            waiting = waiting[~accepted]
            if waiting.numel() == 0:
                break
            z = z.index_put((waiting,), self.proposal.sample(waiting.numel()))
        return z, self._log_prob(z, normaliser)
