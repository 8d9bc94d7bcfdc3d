"""normflows' ``nf.distributions.mh_proposal`` path: proposals ``q(z' | z)`` for Metropolis-Hastings.

flowforge's :class:`~flowforge.flows.MetropolisHastings` layer uses a Gaussian random walk of its
own; these classes keep normflows' interface for code that builds proposals itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ....flows.base import as_event_shape


class MHProposal(nn.Module):
    """normflows' interface of a Metropolis-Hastings proposal: ``sample(z)`` (a new point given ``z``),
    ``log_prob(z_, z)`` (``log q(z_ | z)``) and ``forward(z) -> (z_, log q(z | z_) − log q(z_ | z))``."""

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, z_: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class DiagGaussianProposal(MHProposal):
    r"""normflows' ``DiagGaussianProposal(shape, scale)``: the random walk ``z' = z + scale · ε``,
    ``ε ~ N(0, I)``, symmetric, so ``forward`` returns a zero log-ratio. Buffer ``scale`` of shape
    ``(1, *scale.shape)`` as in normflows."""

    scale: torch.Tensor

    def __init__(self, shape: int | Iterable[int], scale: Any):
        super().__init__()
        self.shape = as_event_shape(shape)
        self.scale_cpu = torch.as_tensor(scale, dtype=torch.get_default_dtype())
        self.register_buffer("scale", self.scale_cpu.unsqueeze(0))

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        eps = torch.randn((len(z), *self.shape), dtype=z.dtype, device=z.device)
        return eps * self.scale + z

    def log_prob(self, z_: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log N(z_; z, diag scale²)``."""
        dims = list(range(1, z.dim()))
        return -0.5 * math.prod(self.shape) * math.log(2 * math.pi) - torch.sum(
            torch.log(self.scale) + 0.5 * ((z_ - z) / self.scale) ** 2, dims
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sample(z), torch.zeros(len(z), dtype=z.dtype, device=z.device)


__all__ = ["DiagGaussianProposal", "MHProposal"]
