r"""normflows' ``nf.sampling.hais`` path: Hamiltonian annealed importance sampling (HAIS).

Annealed importance sampling (Neal 2001) from a prior ``p₀`` to a target ``p̃`` along the geometric
path ``f_j = p̃^{β_j} p₀^{1−β_j}``, ``1 = β₀ > β₁ > … > β_n = 0``, with one HMC transition per
intermediate density (Sohl-Dickstein & Culpepper 2012). flowforge's own AIS is
:func:`flowforge.mcmc.annealed_importance_sampling`; this class keeps normflows' interface on
normflows' ``HamiltonianMonteCarlo`` layer (``nf.flows.HamiltonianMonteCarlo``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .. import flows
from ..distributions.linear_interpolation import LinearInterpolation


def _hmc_layer(target: Any, num_leapfrog: int, step_size: torch.Tensor, log_mass: torch.Tensor) -> torch.nn.Module:
    """One HMC transition that leaves ``target`` invariant: ``num_leapfrog`` leapfrog steps of size
    ``step_size`` with momentum variance ``exp(log_mass)``, built with normflows' positional order
    ``(target, steps, log_step_size, log_mass)`` when ``nf.flows.HamiltonianMonteCarlo`` has it, else
    with flowforge's keywords."""
    layer: Any = flows.HamiltonianMonteCarlo
    parameters = inspect.signature(layer).parameters
    if "log_step_size" in parameters:
        return layer(target, num_leapfrog, torch.log(step_size), log_mass)
    return layer(target, steps=1, leapfrog_steps=num_leapfrog, step_size=step_size, mass=torch.exp(log_mass))


class HAIS:
    r"""normflows' ``HAIS(betas, prior, target, num_leapfrog, step_size, log_mass)``.

    Args:
        betas: the annealing schedule, a 1-D tensor ``1 = β₀ > β₁ > … > β_n = 0``; the intermediate
            densities are ``f_j = p̃^{β_j} p₀^{1−β_j}`` for ``j = n−1 … 1``.
        prior: the starting distribution ``p₀``, with ``forward(n) -> (z, log p₀(z))`` and ``log_prob``.
        target: the target ``p̃`` (``log_prob``), possibly unnormalised.
        num_leapfrog: leapfrog steps per HMC transition.
        step_size: the leapfrog step size (a tensor, per dimension or one for all).
        log_mass: the log of the momentum variance (a tensor).

    :meth:`sample` returns samples and log importance weights ``log p̃(z_n) − log p₀(z₀) + Σ`` of
    the transitions' log-density changes, whose ``logsumexp − log n`` estimates ``log Z``.
    """

    def __init__(
        self,
        betas: torch.Tensor,
        prior: Any,
        target: Any,
        num_leapfrog: int,
        step_size: torch.Tensor,
        log_mass: torch.Tensor,
    ):
        if not isinstance(betas, torch.Tensor) or betas.dim() != 1 or len(betas) < 2:
            raise ValueError("HAIS: betas must be a 1-D tensor 1 = beta_0 > ... > beta_n = 0")
        self.prior = prior
        self.target = target
        self.layers: list[torch.nn.Module] = []
        n = betas.shape[0] - 1
        for i in range(n - 1, 0, -1):
            intermediate = LinearInterpolation(self.target, self.prior, betas[i])
            self.layers.append(_hmc_layer(intermediate, num_leapfrog, torch.as_tensor(step_size), log_mass))

    def sample(self, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_samples`` samples and their log importance weights."""
        samples, log_prior = self.prior.forward(num_samples)
        log_weights = -log_prior
        for layer in self.layers:
            samples, change = layer.forward(samples)
            log_weights = log_weights + change
        return samples, log_weights + self.target.log_prob(samples)


__all__ = ["HAIS"]
