"""The structural types shared across layers: what the library reads of a density or a flow it is given."""

from __future__ import annotations

from typing import Protocol

import torch


class LogDensity(Protocol):
    """A density known up to a constant: ``log_prob(x)`` is ``log p̃(x)`` for a batch, shape ``(batch,)``.
    Targets, bases and flows all qualify."""

    def log_prob(self, x: torch.Tensor, /) -> torch.Tensor: ...


class FlowSampler(Protocol):
    """What annealed importance sampling uses of a flow: its samples with their log-density, its
    density, and its target ``p`` (``None`` when it has none)."""

    @property
    def p(self) -> LogDensity | None: ...

    def sample(self, num_samples: int, /) -> tuple[torch.Tensor, torch.Tensor]: ...

    def log_prob(self, x: torch.Tensor, /) -> torch.Tensor: ...
