r"""Stochastic flow layers: MCMC moves inside a flow (stochastic normalizing flows, Wu, Köhler &
Noé 2020, https://arxiv.org/abs/2002.06707).

A layer moves its input with a Markov kernel ``K`` that satisfies detailed balance with a density
``π`` (the layer's ``target``: the final target, or a point on an annealing path such as
:class:`~flowforge.distributions.AnnealedTarget`). In place of ``log|det J|`` it returns

    ``ΔS = log π(input) − log π(output)``,

the log-ratio of the backward and forward path probabilities, ``K(z | x) / K(x | z) = π(z) / π(x)``.
The models then treat it as a log-determinant: ``log q0(z₀) − Σ ΔS`` is the log-density of the
sampled path, and the importance weights ``p̃(x) / q`` of :mod:`flowforge.metrics` are exact: their
mean is an unbiased estimate of the target's normaliser ``Z``. The ``log_prob`` of a model with
stochastic layers is a one-sample estimate along a random path, not the marginal density.

Both directions run the same reversible kernel (its reversal is itself), so ``inverse`` returns
``log π(input) − log π(output)`` too. These layers are not bijections: the deterministic
conformance harness does not apply; ``tests/test_mcmc.py`` checks their own contract
(invariance, unbiased weights, shapes, persistence).
"""

from __future__ import annotations

import torch
from torch import nn

from ..mcmc import hamiltonian_monte_carlo_step, log_prob_and_grad, metropolis_hastings_step
from ..utils.checks import positive_int
from ..utils.protocols import LogDensity
from .base import Flow


def _check_target(target: object) -> None:
    if not callable(getattr(target, "log_prob", None)):
        raise ValueError(f"target must have a log_prob method, got {type(target).__name__}")


def _log_parameter(module: nn.Module, name: str, value: float | torch.Tensor, trainable: bool) -> None:
    value = torch.as_tensor(value, dtype=torch.get_default_dtype())
    if (value <= 0).any():
        raise ValueError(f"{name} must be positive, got {value}")
    log_value = torch.log(value)
    if trainable:
        setattr(module, "log_" + name, nn.Parameter(log_value))
    else:
        module.register_buffer("log_" + name, log_value)


class MetropolisHastings(Flow):
    r"""``steps`` random-walk Metropolis–Hastings moves towards ``target`` as a stochastic flow layer.

    Proposal ``x' = x + σ ε`` with ``σ = proposal_scale`` (a float or one per coordinate), accepted
    with probability ``min(1, π(x')/π(x))``; ``ΔS = log π(z) − log π(x)``. ``trainable`` makes
    ``log σ`` a parameter (the gradient reaches it through accepted moves, as in Wu et al. 2020).
    Both directions cost ``steps`` evaluations of ``π``.
    """

    log_proposal_scale: torch.Tensor  # a parameter when trainable, a buffer otherwise

    def __init__(
        self, target: LogDensity, steps: int = 1, proposal_scale: float | torch.Tensor = 0.1, trainable: bool = False
    ):
        super().__init__()
        _check_target(target)
        self.target, self.steps = target, positive_int("steps", steps)
        _log_parameter(self, "proposal_scale", proposal_scale, trainable)

    def _move(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_p_start = self.target.log_prob(values)
        state, log_p = values, log_p_start
        scale = torch.exp(self.log_proposal_scale)
        for _ in range(self.steps):
            state, log_p, _ = metropolis_hastings_step(self.target.log_prob, state, log_p, scale)
        return state, log_p_start - log_p

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._move(z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._move(x)


class HamiltonianMonteCarlo(Flow):
    r"""``steps`` Hamiltonian Monte Carlo moves towards ``target`` as a stochastic flow layer.

    Each move draws a momentum ``r ~ N(0, M)`` (diagonal ``M``, ``mass``), runs ``leapfrog_steps``
    leapfrog steps of size ``step_size`` (a float or one per coordinate) and accepts with
    probability ``min(1, exp(−ΔH))``; ``ΔS = log π(z) − log π(x)``. With ``trainable``, ``log ε`` and
    ``log M`` are parameters and the moves stay differentiable (the leapfrog gradients are built with
    ``create_graph`` while autograd records), as in Wu et al. 2020. Costs ``steps · leapfrog_steps``
    gradient evaluations of ``log π``.
    """

    # Parameters when trainable, buffers otherwise.
    log_step_size: torch.Tensor
    log_mass: torch.Tensor

    def __init__(
        self,
        target: LogDensity,
        steps: int = 1,
        leapfrog_steps: int = 10,
        step_size: float | torch.Tensor = 0.1,
        mass: float | torch.Tensor = 1.0,
        trainable: bool = False,
    ):
        super().__init__()
        _check_target(target)
        self.target, self.steps = target, positive_int("steps", steps)
        self.leapfrog_steps = positive_int("leapfrog_steps", leapfrog_steps)
        self.trainable = trainable
        _log_parameter(self, "step_size", step_size, trainable)
        _log_parameter(self, "mass", mass, trainable)

    def _move(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        create_graph = torch.is_grad_enabled() and (self.trainable or values.requires_grad)
        # Without create_graph nothing upstream needs gradients: no parameter here, none in the input.
        log_p_start, grad = log_prob_and_grad(self.target.log_prob, values, create_graph)
        state, log_p = values, log_p_start
        step, inverse_mass = torch.exp(self.log_step_size), torch.exp(-self.log_mass).expand_as(values[0])
        for _ in range(self.steps):
            state, log_p, grad, _ = hamiltonian_monte_carlo_step(
                self.target.log_prob, state, log_p, grad, step, self.leapfrog_steps, inverse_mass, create_graph
            )
        return state, log_p_start - log_p

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._move(z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._move(x)
