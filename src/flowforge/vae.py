"""Variational autoencoders whose approximate posterior is a normalizing flow.

The encoder gives a diagonal Gaussian ``q₀(z₀ | x)`` and features ``h(x)``; a stack of flow layers,
conditioned on ``h(x)`` where they take a context (amortized Planar and Radial, IAF, RealNVP
couplings), turns ``z₀`` into the posterior sample ``z``; the decoder gives ``p(x | z)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .flows.base import Flow, as_event_shape, push_forward
from .flows.coupling import soft_clamp

LIKELIHOODS = ("bernoulli", "gaussian")
"""Decoder likelihoods: ``"bernoulli"`` (binary data, the decoder gives logits) and ``"gaussian"``
(real data, the decoder gives a mean and a log standard deviation per value)."""

_LOG_2PI = math.log(2.0 * math.pi)


class ELBOTerms(NamedTuple):
    """The three log-densities of the ELBO at posterior samples ``z ~ q(z | x)``, each ``(samples, batch)``."""

    log_likelihood: torch.Tensor
    """``log p(x | z)``"""
    log_prior: torch.Tensor
    """``log p(z)``"""
    log_posterior: torch.Tensor
    """``log q(z | x)``"""

    def log_weights(self) -> torch.Tensor:
        """Importance log-weights ``log p(x, z) − log q(z | x)``."""
        return self.log_likelihood + self.log_prior - self.log_posterior


class FlowVAE(nn.Module):
    r"""A VAE with a flow posterior (Rezende & Mohamed 2015; Kingma et al. 2016).

    ``q(z | x)``: ``z₀ = μ(x) + σ(x) ⊙ ε``, ``ε ~ N(0, I)``, then ``z = f_K ∘ … ∘ f_1(z₀; h(x))``, so

    ``log q(z | x) = log N(z₀; μ(x), diag σ(x)²) − Σ_k log|det ∂f_k/∂z_{k−1}|``

    (the flows' cheap direction must be ``forward``, the sampling direction). Prior ``p(z) = N(0, I)``;
    ``p(x | z)`` Bernoulli with logits ``decoder(z)`` or Gaussian with mean and log standard deviation
    ``decoder(z)`` (the latter soft-clamped to ``±log_std_bound``). Trained by maximising

    ``ELBO(x) = E_q[log p(x | z) + log p(z) − log q(z | x)] ≤ log p(x)``,

    and ``log p(x)`` is estimated by importance sampling with ``q`` as the proposal (Burda et al. 2016,
    https://arxiv.org/abs/1509.00519), a bound that tightens as the number of samples grows.

    References: D. Rezende, S. Mohamed, *Variational Inference with Normalizing Flows*, ICML 2015,
    https://arxiv.org/abs/1505.05770; D. Kingma et al., *Improved Variational Inference with Inverse
    Autoregressive Flow*, NeurIPS 2016, https://arxiv.org/abs/1606.04934.

    Args:
        encoder: maps data ``(batch, *data_shape)`` to features ``(batch, encoder_features)``; a linear
            head on them gives ``μ`` and ``log σ``, and the flows that take a context get them as context.
        decoder: maps ``z`` ``(batch, latent_dim)`` to ``(batch, D)`` logits (Bernoulli) or ``(batch, 2D)``
            means and log standard deviations (Gaussian), ``D = prod(data_shape)``.
        flows: layers on ``(latent_dim,)``; none gives the plain Gaussian-posterior VAE.
        latent_dim: size of ``z``.
        data_shape: shape of one data point.
        encoder_features: width of the encoder's output.
        likelihood: one of :data:`LIKELIHOODS`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        flows: Iterable[Flow],
        latent_dim: int,
        data_shape: int | Iterable[int],
        encoder_features: int,
        likelihood: str = "bernoulli",
        log_std_bound: float = 6.0,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if latent_dim < 1 or encoder_features < 1:
            raise ValueError(
                f"latent_dim and encoder_features must be positive, got {latent_dim} and {encoder_features}"
            )
        self.encoder, self.decoder = encoder, decoder
        self.flows = nn.ModuleList(flows)
        self.latent_dim, self.encoder_features = int(latent_dim), int(encoder_features)
        self.data_shape = as_event_shape(data_shape)
        self.data_dim = math.prod(self.data_shape)
        self.likelihood, self.log_std_bound = likelihood, float(log_std_bound)
        self.posterior_head = nn.Linear(self.encoder_features, 2 * self.latent_dim)

    def _like(self) -> torch.Tensor:
        return self.posterior_head.weight

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is a non-empty batch of data points of ``data_shape``."""
        if x.shape[1:] != self.data_shape or x.shape[0] < 1:
            shape = ", ".join(map(str, self.data_shape))
            raise ValueError(f"FlowVAE expects data of shape (batch, {shape}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``μ(x)``, ``log σ(x)`` (each ``(batch, latent_dim)``) and the features ``h(x)``."""
        self.check_data(x)
        features = self.encoder(x)
        if features.shape != (x.shape[0], self.encoder_features):
            raise ValueError(
                f"the encoder must return ({x.shape[0]}, {self.encoder_features}) features, got {tuple(features.shape)}"
            )
        mean, log_std = self.posterior_head(features).chunk(2, dim=1)
        return mean, log_std, features

    def sample_posterior(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``z ~ q(z | x)``: ``(num_samples, batch, latent_dim)`` and ``log q(z | x)`` ``(num_samples, batch)``."""
        mean, log_std, features = self.encode(x)
        rows = num_samples * x.shape[0]
        noise = torch.randn(num_samples, *mean.shape, dtype=mean.dtype, device=mean.device)
        z0 = (mean + torch.exp(log_std) * noise).reshape(rows, self.latent_dim)
        log_q0 = -0.5 * (noise * noise).sum(-1) - log_std.sum(-1) - 0.5 * self.latent_dim * _LOG_2PI
        context = features.expand(num_samples, *features.shape).reshape(rows, self.encoder_features)
        z, log_det = push_forward(cast("Sequence[Flow]", self.flows), z0, context)  # a ModuleList of Flows
        return z.view(num_samples, *mean.shape), log_q0 - log_det.view(num_samples, -1)

    def decoder_log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` for ``z`` of shape ``(samples, batch, latent_dim)``: ``(samples, batch)``."""
        out = self.decoder(z.reshape(-1, self.latent_dim)).view(*z.shape[:2], -1)
        flat = x.reshape(1, x.shape[0], self.data_dim)
        if self.likelihood == "bernoulli":
            self._check_decoder(out, self.data_dim)
            return -F.binary_cross_entropy_with_logits(out, flat.expand_as(out), reduction="none").sum(-1)
        self._check_decoder(out, 2 * self.data_dim)
        mean, log_std = out.chunk(2, dim=-1)
        log_std = soft_clamp(log_std, self.log_std_bound)
        scaled = (flat - mean) * torch.exp(-log_std)
        return -0.5 * (scaled * scaled).sum(-1) - log_std.sum(-1) - 0.5 * self.data_dim * _LOG_2PI

    def _check_decoder(self, out: torch.Tensor, width: int) -> None:
        if out.shape[-1] != width:
            raise ValueError(
                f"a {self.likelihood} decoder must return {width} values per latent vector "
                f"(data of {self.data_dim} values), got {out.shape[-1]}"
            )

    def terms(self, x: torch.Tensor, num_samples: int = 1) -> ELBOTerms:
        """``log p(x | z)``, ``log p(z)`` and ``log q(z | x)`` at ``num_samples`` posterior samples per row."""
        z, log_q = self.sample_posterior(x, num_samples)
        log_prior = -0.5 * (z * z).sum(-1) - 0.5 * self.latent_dim * _LOG_2PI
        return ELBOTerms(self.decoder_log_likelihood(x, z), log_prior, log_q)

    def elbo(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Monte Carlo ELBO per row, averaged over ``num_samples`` posterior samples: ``(batch,)``."""
        return self.terms(x, num_samples).log_weights().mean(0)

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """The training loss ``−mean(log p(x | z) − β (log q(z | x) − log p(z)))`` with one posterior
        sample per row; ``β < 1`` is the warm-up weight of the KL term (Sønderby et al. 2016)."""
        return losses.elbo_loss(self, x, beta)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, num_samples: int = 1000, samples_per_pass: int = 100) -> torch.Tensor:
        """Importance-sampled ``log p(x) ≈ log (1/S) Σ_s p(x, z_s) / q(z_s | x)`` with ``S = num_samples``
        (Burda et al. 2016); ``(batch,)``. Its expectation is a lower bound on ``log p(x)`` that is at
        least the ELBO and tightens as ``S`` grows."""
        if num_samples < 1 or samples_per_pass < 1:
            raise ValueError(
                f"num_samples and samples_per_pass must be positive, got {num_samples} and {samples_per_pass}"
            )
        log_weights = []
        for start in range(0, num_samples, samples_per_pass):
            log_weights.append(self.terms(x, min(samples_per_pass, num_samples - start)).log_weights())
        return torch.logsumexp(torch.cat(log_weights), 0) - math.log(num_samples)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x | z)`` (probabilities for Bernoulli) for ``z`` of shape ``(batch, latent_dim)``,
        shaped like the data."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"decode expects z of shape (batch, {self.latent_dim}), got {tuple(z.shape)}")
        out = self.decoder(z)
        mean = torch.sigmoid(out) if self.likelihood == "bernoulli" else out[:, : self.data_dim]
        return mean.reshape(z.shape[0], *self.data_shape)

    @torch.no_grad()
    def sample(self, num_samples: int = 1) -> torch.Tensor:
        """Means of ``p(x | z)`` at ``num_samples`` draws ``z ~ p(z)``."""
        like = self._like()
        return self.decode(torch.randn(num_samples, self.latent_dim, dtype=like.dtype, device=like.device))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x | z)`` at one posterior sample ``z ~ q(z | x)`` per row."""
        z, _ = self.sample_posterior(x)
        return self.decode(z[0])
