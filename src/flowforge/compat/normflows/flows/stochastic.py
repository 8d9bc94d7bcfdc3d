r"""normflows' ``nf.flows.stochastic`` path: the MCMC layers of stochastic normalizing flows (Wu,
Köhler & Noé 2020, https://arxiv.org/abs/2002.06707) with normflows' arguments.

normflows' ``MetropolisHastings(target, proposal, steps)`` takes a proposal module (e.g.
``nf.distributions.mh_proposal.DiagGaussianProposal``) and its
``HamiltonianMonteCarlo(target, steps, log_step_size, log_mass, max_abs_grad=None)`` runs one move of
``steps`` leapfrog steps with trainable ``log_step_size`` and ``log_mass``; flowforge's layers of
these names (:mod:`flowforge.flows.stochastic`) take scales instead, so these are small classes of
their own. Both return ``ΔS = log π(input) − log π(output)`` in place of a log-determinant, in both
directions, as flowforge's do.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ....flows.base import Flow
from ....utils.protocols import LogDensity

__all__ = ["Flow", "HamiltonianMonteCarlo", "MetropolisHastings"]

Proposal = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _check_target(target: object) -> None:
    if not callable(getattr(target, "log_prob", None)):
        raise TypeError(f"target must have a log_prob method, got {type(target).__name__}")


class MetropolisHastings(Flow):
    r"""``steps`` Metropolis–Hastings moves towards ``target`` with a given proposal.

    ``proposal(z)`` returns a proposed ``z'`` and ``log q(z | z') − log q(z' | z)``; each move accepts
    with probability ``min(1, π(z') q(z | z') / (π(z) q(z' | z)))``. Returns the moved samples and
    ``Σ_accepted (log π(z) − log π(z'))``. ``inverse`` is ``forward`` (the kernel is reversible).
    Costs ``steps`` evaluations of ``π`` and of the proposal.
    """

    def __init__(self, target: LogDensity, proposal: Proposal, steps: int):
        super().__init__()
        _check_target(target)
        if not callable(proposal):
            raise TypeError(f"proposal must be callable (z -> (z', log-ratio)), got {type(proposal).__name__}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        self.target = target
        self.proposal = proposal
        self.steps = steps

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = z.shape[0]
        log_det = z.new_zeros(rows)
        log_p = self.target.log_prob(z)
        for _ in range(self.steps):
            proposed, log_ratio = self.proposal(z)
            log_p_proposed = self.target.log_prob(proposed)
            uniform = torch.rand(rows, dtype=z.dtype, device=z.device)
            accept = uniform <= torch.clamp(torch.exp(log_p_proposed - log_p + log_ratio), max=1)
            z = torch.where(accept.unsqueeze(1), proposed, z)
            log_det = torch.where(accept, log_det + log_p - log_p_proposed, log_det)
            log_p = torch.where(accept, log_p_proposed, log_p)
        return z, log_det

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(x)


class HamiltonianMonteCarlo(Flow):
    r"""One Hamiltonian Monte Carlo move of ``steps`` leapfrog steps towards ``target``.

    Momentum ``p ~ N(0, diag(exp(log_mass)))``; leapfrog with step ``exp(log_step_size)`` (one per
    coordinate) and velocity ``p / exp(log_mass)``; accepted with probability
    ``exp(log π(z') − log π(z) − ½ Σ p'²/m + ½ Σ p²/m)``. ``log_step_size`` and ``log_mass`` (shape
    ``(dim,)``) are parameters. ``max_abs_grad`` clips ``∇ log π`` elementwise (None: no clipping).
    Returns ``log π(z) − log π(z_out)``; ``inverse`` is ``forward``. Costs ``2 · steps`` gradients.
    """

    def __init__(
        self,
        target: LogDensity,
        steps: int,
        log_step_size: torch.Tensor,
        log_mass: torch.Tensor,
        max_abs_grad: float | None = None,
    ):
        super().__init__()
        _check_target(target)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        self.target = target
        self.steps = steps
        self.log_step_size = nn.Parameter(torch.as_tensor(log_step_size))
        self.log_mass = nn.Parameter(torch.as_tensor(log_mass))
        self.max_abs_grad = max_abs_grad

    def gradlogP(self, z: torch.Tensor) -> torch.Tensor:  # noqa: N802 (normflows' name)
        """``∇_z log π(z)`` (of a detached copy), clipped to ``±max_abs_grad`` when set."""
        with torch.enable_grad():
            point = z.detach().requires_grad_()
            log_p = self.target.log_prob(point)
            (grad,) = torch.autograd.grad(log_p, point, grad_outputs=torch.ones_like(log_p))
        if self.max_abs_grad:
            grad = torch.clamp(grad, min=-self.max_abs_grad, max=self.max_abs_grad)
        return grad

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mass = torch.exp(self.log_mass)
        momentum = torch.randn_like(z) * torch.exp(0.5 * self.log_mass)
        step = torch.exp(self.log_step_size)
        position, p = z.clone(), momentum.clone()
        for _ in range(self.steps):
            p_half = p + (step / 2.0) * self.gradlogP(position)
            position = position + step * (p_half / mass)
            p = p_half + (step / 2.0) * self.gradlogP(position)
        log_accept = (
            self.target.log_prob(position)
            - self.target.log_prob(z)
            - 0.5 * torch.sum(p**2 / mass, 1)
            + 0.5 * torch.sum(momentum**2 / mass, 1)
        )
        accept = torch.rand_like(log_accept) < torch.exp(log_accept)
        out = torch.where(accept.unsqueeze(1), position, z)
        return out, self.target.log_prob(z) - self.target.log_prob(out)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(x)
