"""normflows' ``nf.distributions.linear_interpolation`` path: the geometric path between two densities."""

from __future__ import annotations

from typing import Any

import torch


class LinearInterpolation:
    r"""normflows' ``LinearInterpolation(dist1, dist2, alpha)``: the log-linear mixture
    ``log p(z) = α log p₁(z) + (1 − α) log p₂(z)`` (unnormalised), the intermediate densities of
    annealed importance sampling. Like normflows' it is a plain object, not a module (the two
    densities are not registered as submodules of whatever holds it). flowforge's own form is
    :class:`~flowforge.distributions.AnnealedTarget` ``(base, target, beta)``."""

    def __init__(self, dist1: Any, dist2: Any, alpha: float | torch.Tensor):
        self.alpha = alpha
        self.dist1 = dist1
        self.dist2 = dist2

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.dist1.log_prob(z) + (1 - self.alpha) * self.dist2.log_prob(z)


__all__ = ["LinearInterpolation"]
