"""Markov-chain Monte Carlo for any density with ``log_prob``: Metropolis–Hastings, Hamiltonian
Monte Carlo, and annealed importance sampling from a flow.

The kernels are functions of a batch of independent chains ``x`` of shape ``(chains, *event)``
and a log-density ``log_prob(x) -> (chains,)`` known up to a constant. Each leaves that density
invariant (detailed balance with a Metropolis correction); :class:`~flowforge.flows.MetropolisHastings`
and :class:`~flowforge.flows.HamiltonianMonteCarlo` use the same kernels as stochastic flow layers.
Everything runs on the device and dtype of ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .importance import effective_sample_size, log_normalizer
from .utils.checks import positive_int
from .utils.protocols import FlowSampler, LogDensity

LogProb = Callable[[torch.Tensor], torch.Tensor]
KERNELS = ("mh", "hmc")
# Acceptance rates the step size is tuned towards during burn-in: optimal scaling of random-walk
# Metropolis (Roberts, Gelman & Gilks 1997) and of HMC (Beskos et al. 2013).
TARGET_ACCEPTANCE = {"mh": 0.234, "hmc": 0.65}


def _step_like(step_size: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """``step_size`` as a tensor that broadcasts against ``x`` without changing its shape: a float,
    one value per coordinate (the event's shape) or per chain (``(chains, 1, …)``), or both."""
    step = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    try:
        fits = torch.broadcast_shapes(step.shape, x.shape) == x.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"step_size must broadcast against the chains' shape {tuple(x.shape)} (a float, the event's shape "
            f"{tuple(x.shape[1:])}, or ({x.shape[0]}, 1, ...) per chain), got shape {tuple(step.shape)}"
        )
    return step


def _checked_log_prob(log_prob: LogProb, x: torch.Tensor, proposal: bool = False) -> torch.Tensor:
    """``log_prob(x)`` with its shape checked. NaN at a current state is an error; at a proposal it
    counts as ``−inf`` (the move is rejected), as a proposal may leave the region where a flow's
    density is finite."""
    value = log_prob(x)
    if value.shape != (x.shape[0],):
        expected = (x.shape[0],)
        raise ValueError(f"log_prob must return shape {expected} for {x.shape[0]} chains, got {tuple(value.shape)}")
    if proposal:
        return torch.where(torch.isnan(value), -torch.inf, value)
    if torch.isnan(value).any():
        raise ValueError("log_prob returned NaN: MCMC needs a log-density defined at every state it visits")
    return value


def _accept(log_ratio: torch.Tensor) -> torch.Tensor:
    """Metropolis test ``u < min(1, exp(log_ratio))`` per chain (NaN ratios are rejected)."""
    log_u = torch.log(torch.rand_like(log_ratio))
    return log_u < log_ratio


def _where(accepted: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(accepted.view(-1, *([1] * (new.dim() - 1))), new, old)


def metropolis_hastings_step(
    log_prob: LogProb, x: torch.Tensor, log_p: torch.Tensor, step_size: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""One random-walk Metropolis–Hastings move per chain (Metropolis et al. 1953; Hastings 1970).

    Proposal ``x' = x + σ ε``, ``ε ~ N(0, I)`` (symmetric), accepted with probability
    ``min(1, p(x')/p(x))``; a NaN log-density at ``x'`` rejects it. ``log_p`` is ``log_prob(x)``.
    Returns the new states, their log-densities
    and a boolean per chain saying whether it moved. Differentiable along the path: the gradient
    of an accepted move flows through ``x + σ ε``.
    """
    proposal = x + _step_like(step_size, x) * torch.randn_like(x)
    log_p_proposal = _checked_log_prob(log_prob, proposal, proposal=True)
    accepted = _accept(log_p_proposal - log_p)
    return _where(accepted, proposal, x), torch.where(accepted, log_p_proposal, log_p), accepted


def log_prob_and_grad(
    log_prob: LogProb, x: torch.Tensor, create_graph: bool = False, proposal: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_prob(x)`` and its gradient in ``x``. With ``create_graph`` the gradient stays
    differentiable (for training through HMC moves); otherwise both are detached. ``proposal``:
    NaN counts as ``−inf`` (see :func:`metropolis_hastings_step`)."""
    with torch.enable_grad():
        inputs = x if create_graph and x.requires_grad else x.detach().requires_grad_(True)
        value = _checked_log_prob(log_prob, inputs, proposal)
        (grad,) = torch.autograd.grad(value.sum(), inputs, create_graph=create_graph)
    if not create_graph:
        value, grad = value.detach(), grad.detach()
    return value, grad


def hamiltonian_monte_carlo_step(
    log_prob: LogProb,
    x: torch.Tensor,
    log_p: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor | float,
    leapfrog_steps: int = 10,
    inverse_mass: torch.Tensor | None = None,
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""One Hamiltonian Monte Carlo move per chain (Duane et al. 1987; Neal 2011,
    https://arxiv.org/abs/1206.1901).

    Momentum ``r ~ N(0, M)`` with diagonal mass ``M = 1/inverse_mass``; ``leapfrog_steps`` leapfrog
    steps of size ``ε`` on ``H(x, r) = −log p(x) + ½ rᵀM⁻¹r``; the end point is accepted with
    probability ``min(1, exp(H(x, r) − H(x', r')))``. ``log_p`` and ``grad`` are ``log_prob(x)`` and
    its gradient. Returns the new states, their log-densities and gradients, and the boolean
    acceptances. ``create_graph`` keeps the moves differentiable (training through them).
    """
    positive_int("leapfrog_steps", leapfrog_steps)
    step = _step_like(step_size, x)
    inverse_mass = torch.ones_like(x[0]) if inverse_mass is None else inverse_mass.to(x)
    momentum = torch.randn_like(x) / torch.sqrt(inverse_mass)

    def kinetic(r: torch.Tensor) -> torch.Tensor:
        return 0.5 * (r * r * inverse_mass).flatten(1).sum(1)

    start_energy = kinetic(momentum) - log_p
    position, r, new_grad = x, momentum + 0.5 * step * grad, grad
    for index in range(leapfrog_steps):
        position = position + step * inverse_mass * r
        new_log_p, new_grad = log_prob_and_grad(log_prob, position, create_graph, proposal=True)
        r = r + (step if index < leapfrog_steps - 1 else 0.5 * step) * new_grad
    log_ratio = start_energy - (kinetic(r) - new_log_p)
    accepted = _accept(log_ratio.detach())
    return (
        _where(accepted, position, x),
        torch.where(accepted, new_log_p, log_p),
        _where(accepted, new_grad, grad),
        accepted,
    )


@dataclass
class Chain:
    """What :func:`sample_chain` returns.

    ``samples``: ``(num_samples, chains, *event)``; ``acceptance``: mean acceptance after burn-in;
    ``step_size``: the step sizes used after burn-in, per chain and coordinate ``(chains, *event)``.
    """

    samples: torch.Tensor
    acceptance: float
    step_size: torch.Tensor

    def flat(self) -> torch.Tensor:
        """All samples of all chains as one batch ``(num_samples · chains, *event)``."""
        return self.samples.flatten(0, 1)


class _Kernel:
    """A kernel's state (current position, log-density and, for HMC, gradient) and its move."""

    def __init__(
        self, name: str, log_prob: LogProb, x: torch.Tensor, leapfrog_steps: int, inverse_mass: torch.Tensor | None
    ):
        if name not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {name!r}")
        self.name, self.log_prob, self.leapfrog_steps, self.inverse_mass = name, log_prob, leapfrog_steps, inverse_mass
        self.x = x.detach()
        if name == "hmc":
            self.log_p, self.grad = log_prob_and_grad(log_prob, self.x)
        else:
            with torch.no_grad():
                self.log_p = _checked_log_prob(log_prob, self.x)
        if not torch.isfinite(self.log_p).all():
            raise ValueError("the initial states must have finite log-density under the target")

    def move(self, step_size: torch.Tensor | float) -> torch.Tensor:
        if self.name == "hmc":
            self.x, self.log_p, self.grad, accepted = hamiltonian_monte_carlo_step(
                self.log_prob, self.x, self.log_p, self.grad, step_size, self.leapfrog_steps, self.inverse_mass
            )
        else:
            with torch.no_grad():
                self.x, self.log_p, accepted = metropolis_hastings_step(self.log_prob, self.x, self.log_p, step_size)
        return accepted


def sample_chain(
    log_prob: LogProb,
    initial: torch.Tensor,
    num_samples: int,
    kernel: str = "hmc",
    step_size: float | torch.Tensor = 0.1,
    leapfrog_steps: int = 10,
    burn_in: int = 500,
    thin: int = 1,
    adapt: bool = True,
    target_acceptance: float | None = None,
    inverse_mass: torch.Tensor | None = None,
) -> Chain:
    """Run ``initial.shape[0]`` independent chains and keep ``num_samples`` states of each.

    During ``burn_in`` each chain's step size is tuned (when ``adapt``) by a Robbins–Monro update of
    ``log ε`` towards ``target_acceptance`` (0.234 for ``"mh"``, 0.65 for ``"hmc"``); afterwards it is
    fixed, so the kept states are a valid Markov chain for the target. Every ``thin``-th state is kept.
    """
    positive_int("num_samples", num_samples)
    positive_int("thin", thin)
    if burn_in < 0:
        raise ValueError(f"burn_in must be >= 0, got {burn_in}")
    if initial.dim() < 2:
        raise ValueError(f"initial must have shape (chains, *event), got {tuple(initial.shape)}")
    state = _Kernel(kernel, log_prob, initial, leapfrog_steps, inverse_mass)
    target = TARGET_ACCEPTANCE[kernel] if target_acceptance is None else float(target_acceptance)
    if not 0 < target < 1:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target}")
    step = _step_like(step_size, initial)
    if (step <= 0).any():
        raise ValueError("step_size must be positive")
    # One step size per chain and coordinate; adaptation moves each chain's as a whole.
    log_step = torch.log(step).expand_as(initial).clone()
    for index in range(burn_in):
        accepted = state.move(torch.exp(log_step))
        if adapt:
            rate = 1.0 / math.sqrt(index + 1.0)
            change = rate * (accepted.to(log_step.dtype) - target)
            log_step = log_step + change.view(-1, *([1] * (initial.dim() - 1)))
    kept, accepted_count = [], 0.0
    for index in range(num_samples * thin):
        accepted_count += float(state.move(torch.exp(log_step)).float().mean())
        if (index + 1) % thin == 0:
            kept.append(state.x)
    return Chain(torch.stack(kept), accepted_count / (num_samples * thin), torch.exp(log_step))


@dataclass
class AnnealedImportanceSamples:
    """What :func:`annealed_importance_sampling` returns: the final states ``samples``, their
    ``log_weights`` (``(n,)``), the estimate ``log_z`` of the target's log-normaliser with its
    delta-method standard error ``log_z_se``, and the normalised effective sample size ``ess``."""

    samples: torch.Tensor
    log_weights: torch.Tensor
    log_z: float
    log_z_se: float
    ess: float
    acceptance: float
    step_size: float = math.nan
    """the kernel's step size at the end (adapted, or as given)"""


def geometric_path(log_initial: LogProb, log_target: LogProb, beta: float) -> LogProb:
    """``log π_β = (1 − β) log q + β log p̃``, the annealing path between a start and a target."""

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return (1 - beta) * log_initial(x) + beta * log_target(x)

    return log_prob


def annealed_importance_sampling(
    model: FlowSampler,
    target: LogDensity | None = None,
    num_samples: int = 1000,
    num_temperatures: int = 64,
    kernel: str = "hmc",
    steps_per_temperature: int = 1,
    step_size: float = 0.1,
    leapfrog_steps: int = 5,
    adapt: bool = True,
    alpha: float = 1.0,
) -> AnnealedImportanceSamples:
    r"""Annealed importance sampling (Neal 2001, https://arxiv.org/abs/physics/9803008) from a flow.

    Draw ``x₀ ~ q`` from ``model`` (a :class:`~flowforge.NormalizingFlow`), then for
    ``0 = β₀ < β₁ < … < β_T = 1`` add ``(β_t − β_{t−1})(log p̃(x) − log q(x))`` to the log-weight and
    move ``x`` with an MCMC kernel that leaves ``π_{β_t} ∝ q^{1−β_t} p̃^{β_t}`` invariant. The weights
    give an unbiased estimate of ``Z`` whatever the kernel's mixing; a good flow needs few
    temperatures. With ``adapt`` one step size shared by all chains follows the population's
    acceptance towards the kernel's target as the temperature rises (as in flow annealed importance
    sampling, Midgley et al. 2023); the estimate is then consistent, with a bias that vanishes as
    ``num_samples`` grows; ``adapt=False`` keeps ``step_size`` fixed and the weights exactly
    unbiased. ``target`` defaults to ``model.p``. Needs ``model.log_prob`` at every step, so flows
    with a cheap density direction (couplings, MAF, splines) suit it best.

    With ``alpha`` ≠ 1 the chains anneal towards ``p̃^α q^{1−α}`` instead of ``p̃``: the path is
    ``π_β ∝ q^{1−αβ} p̃^{αβ}``, each temperature adds ``(β_t − β_{t−1}) α (log p̃ − log q)`` to the
    log-weight, and ``log_z`` estimates ``log ∫ p̃^α q^{1−α}``. ``alpha=2`` is the proposal of
    :class:`~flowforge.fab.FAB`: ``p̃²/q`` minimises the variance of the importance estimate of the
    α = 2 divergence (Midgley et al. 2023, https://arxiv.org/abs/2208.01893).
    """
    positive_int("num_samples", num_samples)
    positive_int("num_temperatures", num_temperatures)
    positive_int("steps_per_temperature", steps_per_temperature)
    target = model.p if target is None else target
    if target is None:
        raise ValueError("annealed importance sampling needs a target: give target= or a model built with p=")
    betas = torch.linspace(0, 1, num_temperatures + 1).tolist()
    with torch.no_grad():
        x, log_q = model.sample(num_samples)
        log_weights = torch.zeros_like(log_q, dtype=torch.float64)
        log_p = target.log_prob(x)
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    log_step, accepted_total, moves = math.log(step_size), 0.0, 0
    if kernel not in KERNELS:  # as _Kernel would say below; checked here so that goal is known
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    goal = TARGET_ACCEPTANCE[kernel]
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    for index in range(1, len(betas)):
        beta, previous = betas[index], betas[index - 1]
        log_weights = log_weights + (beta - previous) * alpha * (log_p - log_q).double()
        path = geometric_path(model.log_prob, target.log_prob, alpha * beta)  # q^(1−αβ) p̃^(αβ)
        state = _Kernel(kernel, path, x, leapfrog_steps, None)
        for _ in range(steps_per_temperature):
            rate = float(state.move(math.exp(log_step)).float().mean())
            accepted_total, moves = accepted_total + rate, moves + 1
            if adapt:
                log_step += 0.1 * (rate - goal)
        x = state.x
        with torch.no_grad():
            log_q, log_p = model.log_prob(x), target.log_prob(x)
    if torch.isnan(log_weights).any():
        raise ValueError("AIS produced NaN log-weights: the flow or the target is not finite at some states")
    log_z, log_z_se = log_normalizer(log_weights)
    return AnnealedImportanceSamples(
        x.detach(), log_weights, float(log_z), float(log_z_se), float(effective_sample_size(log_weights)),
        accepted_total / moves, math.exp(log_step),
    )  # fmt: skip
