"""The model: a base distribution pushed through a stack of flows, with its losses.

``x = f_K ∘ … ∘ f_1(z₀)``, ``z₀ ~ q0`` and ``log q(x) = log q0(z₀) − Σₖ log|det ∂fₖ/∂z|``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .distributions.base import BaseDistribution
from .flows.base import Flow, pull_back, push_forward


@contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Stop gradients to ``module``'s parameters for the duration (restoring their flags)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class NormalizingFlow(nn.Module):
    """A normalizing flow model ``q`` with an optional target density ``p``.

    Args:
        q0: base distribution; ``q0(n)`` returns ``(z, log q0(z))``.
        flows: flow layers, applied in order in the sampling (``forward``) direction.
        p: optional target with ``log_prob`` (possibly unnormalised), needed by the
            reverse-KL and α-divergence losses.

    The call forms follow normflows, so scripts written for it run unchanged.
    """

    def __init__(self, q0: BaseDistribution, flows: Iterable[Flow], p: nn.Module | None = None):
        super().__init__()
        self.q0 = q0
        self.flows = nn.ModuleList(flows)
        self.p = p

    def forward_and_log_det(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map base samples to data space; returns ``(x, log|det ∂x/∂z|)``."""
        return push_forward(self.flows, z)

    def inverse_and_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map data to the base space; returns ``(z, log|det ∂z/∂x|)``."""
        return pull_back(self.flows, x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map base samples to data space (sampling direction)."""
        return self.forward_and_log_det(z)[0]

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Map data to the base space (density direction)."""
        return self.inverse_and_log_det(x)[0]

    def sample(self, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``num_samples`` samples; returns ``(x, log q(x))``."""
        z, log_q = self.q0(num_samples)
        x, log_det = push_forward(self.flows, z)
        return x, log_q - log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log q(x)`` for a batch ``x``, shape ``(batch,)``."""
        z, log_det = self.inverse_and_log_det(x)
        return self.q0.log_prob(z) + log_det

    def forward_kld(self, x: torch.Tensor) -> torch.Tensor:
        """Forward KL ``KL(p‖q)`` up to a constant: ``−mean log q(x)`` for samples ``x ~ p``."""
        return -self.log_prob(x).mean()

    def _require_target(self) -> nn.Module:
        if self.p is None:
            raise ValueError("this loss needs a target density: build NormalizingFlow(q0, flows, p=target)")
        return self.p

    def _log_q_stopped(self, x: torch.Tensor) -> torch.Tensor:
        """``log q(x)`` with the parameters held fixed but the dependence on ``x`` kept
        (the path derivative used by "sticking the landing" and DReG)."""
        with frozen_parameters(self):
            return self.log_prob(x)

    def reverse_kld(
        self, num_samples: int = 1, beta: float | torch.Tensor = 1.0, score_fn: bool = True
    ) -> torch.Tensor:
        """Reverse KL ``KL(q‖p)`` up to ``log Z``: ``mean(log q(x) − β log p̃(x))``, ``x ~ q``.

        ``beta`` anneals the target (Rezende & Mohamed 2015). ``score_fn=False`` uses the
        "sticking the landing" estimator (Roeder et al. 2017,
        https://arxiv.org/abs/1703.09194): ``log q`` is evaluated with the parameters
        held fixed, which drops the zero-mean score term from the gradient.
        """
        target = self._require_target()
        x, log_q = self.sample(num_samples)
        if not score_fn:
            log_q = self._log_q_stopped(x)
        return log_q.mean() - beta * target.log_prob(x).mean()

    def reverse_alpha_div(self, num_samples: int = 1, alpha: float = 1.0, dreg: bool = False) -> torch.Tensor:
        r"""α-divergence between the target and the flow, estimated with ``x ~ q``.

        ``D_α = 1/(α(α−1)) log E_q[(p/q)^α]`` with ``p`` self-normalised by the same
        samples, i.e. ``1/(α(α−1)) (log mean wᵅ − α log mean w)`` with ``w = p̃/q``. It
        is Rényi's divergence ``D_α(p‖q)`` divided by ``α``; its limits are
        ``KL(p‖q)`` at ``α = 1`` (the default, mass-covering) and ``KL(q‖p)`` at ``α = 0``
        (mode-seeking), both handled exactly. Invariant to the scale of ``p̃``.

        ``dreg=True`` returns the same value with the doubly-reparameterised gradient
        (Tucker et al. 2019, https://arxiv.org/abs/1810.04152): the score terms are
        replaced by path derivatives, which lowers the gradient's variance.
        """
        target = self._require_target()
        x, log_q = self.sample(num_samples)
        log_w = target.log_prob(x) - log_q
        value = alpha_divergence(log_w, alpha)
        if not dreg:
            return value
        log_w_path = target.log_prob(x) - self._log_q_stopped(x)
        weights = _dreg_weights(log_w.detach(), alpha)
        surrogate = (weights * log_w_path).sum()
        return value.detach() + surrogate - surrogate.detach()

    def save(self, path: str | os.PathLike) -> None:
        """Save the parameters (``state_dict``) to ``path``."""
        torch.save(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        """Load parameters saved by :meth:`save` into this model (same architecture)."""
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def _log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(values, 0) - math.log(values.shape[0])


def alpha_divergence(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    """The self-normalised α-divergence estimate from log importance weights ``log p̃ − log q``."""
    if alpha == 1.0:
        return (torch.softmax(log_w, 0) * log_w).sum() - _log_mean_exp(log_w)
    if alpha == 0.0:
        return _log_mean_exp(log_w) - log_w.mean()
    return (_log_mean_exp(alpha * log_w) - alpha * _log_mean_exp(log_w)) / (alpha * (alpha - 1.0))


def _dreg_weights(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""Per-sample weights ``gᵢ`` with ``∇D_α ≈ Σᵢ gᵢ ∇_path log wᵢ``.

    For ``L_β = log mean wᵝ`` with normalised weights ``vᵢ = wᵢᵝ/Σwᵝ``, replacing each
    score term by its reparameterised form gives ``∇L_β ≈ Σᵢ β vᵢ(1 − β + β vᵢ) ∇_path log wᵢ``.
    ``D_α = (L_α − α L_1)/(α(α−1))``; at ``α ∈ {0, 1}`` the weights are the limits.
    """
    v1 = torch.softmax(log_w, 0)
    if alpha == 1.0:
        return v1 * v1 - v1 + 2 * v1 * v1 * (log_w - (v1 * log_w).sum())
    if alpha == 0.0:
        return v1 * v1 - 1.0 / log_w.shape[0]
    va = torch.softmax(alpha * log_w, 0)
    return (alpha * va * (1 - alpha + alpha * va) - alpha * v1 * v1) / (alpha * (alpha - 1.0))
