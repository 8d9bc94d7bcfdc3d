"""normflows' ``nf.flows.normalization`` path: ``ActNorm`` and ``BatchNorm`` as normflows defines them.

``ActNorm`` is flowforge's layer with normflows' ``state_dict`` (the initialisation flag is the
float buffer ``data_dep_init_done``). normflows' ``BatchNorm(eps=1e-10)`` is a different map from
flowforge's :class:`~flowforge.flows.BatchNorm`: its ``forward`` normalises every batch with that
batch's own statistics (unbiased standard deviation) and it has no inverse; it is kept here as is.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ....flows.affine import AffineConstFlow
from ....flows.base import Flow
from ....flows.normalization import ActNorm as NativeActNorm
from .._state import Entries, normflows_state

__all__ = ["ActNorm", "AffineConstFlow", "BatchNorm", "Flow"]


class ActNorm(NativeActNorm):
    r"""normflows' ``ActNorm(shape, scale=True, shift=True)`` (Glow's activation normalisation,
    https://arxiv.org/abs/1807.03039): ``x = z ⊙ exp(s) + t`` with ``s, t`` set from the first batch
    (flowforge's :class:`~flowforge.flows.ActNorm`, same formulas). Its ``state_dict`` holds ``s``, ``t``
    and normflows' ``data_dep_init_done`` (1.0 once initialised) instead of flowforge's boolean
    ``initialized``. A first batch of one image initialises it when ``shape`` shares the parameters
    over the pixels, e.g. ``(C, 1, 1)``."""

    def __init__(self, shape: int | Iterable[int], scale: bool = True, shift: bool = True):
        super().__init__(shape, scale, shift)
        normflows_state(self, _save_actnorm, _load_actnorm)


def _save_actnorm(entries: Entries) -> Entries:
    out = {key: value for key, value in entries.items() if key != "initialized"}
    if "initialized" in entries:
        dtype = entries["s"].dtype if "s" in entries else torch.get_default_dtype()
        out["data_dep_init_done"] = entries["initialized"].to(dtype)
    return out


def _load_actnorm(entries: Entries) -> Entries:
    out = {key: value for key, value in entries.items() if key != "data_dep_init_done"}
    if "data_dep_init_done" in entries:
        out["initialized"] = entries["data_dep_init_done"] > 0
    return out


class BatchNorm(Flow):
    r"""normflows' ``BatchNorm(eps=1e-10)``: batch normalisation without running statistics
    (RealNVP, Dinh et al. 2017, https://arxiv.org/abs/1605.08803).

    ``forward`` normalises over the batch: ``z' = (z − μ_B) / sqrt(σ_B² + ε)`` with the batch mean and
    unbiased standard deviation (treated as constants of the map), ``log|det| = −½ Σ log(σ_B² + ε)``,
    the same for every row. It has no inverse, as in normflows; flowforge's
    :class:`~flowforge.flows.BatchNorm` (running statistics, both directions) is the layer to train
    with. ``eps`` is a buffer, as in normflows' ``state_dict``.
    """

    eps: torch.Tensor

    def __init__(self, eps: float = 1.0e-10):
        super().__init__()
        if not eps >= 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.register_buffer("eps", torch.tensor(eps))

    @property
    def couples_batch(self) -> bool:
        """Every row is normalised with the whole batch's statistics."""
        return True

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.dim() < 2 or z.shape[0] < 2:
            raise ValueError(f"BatchNorm expects a batch of at least 2 rows, shape (batch, ...), got {tuple(z.shape)}")
        mean = torch.mean(z, dim=0, keepdim=True)
        scale = torch.sqrt(torch.std(z, dim=0, keepdim=True) ** 2 + self.eps)
        log_det = -torch.sum(torch.log(scale))
        return (z - mean) / scale, log_det.expand(z.shape[0])

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(
            "normflows' BatchNorm has no inverse (it normalises with each batch's own statistics); "
            "use flowforge.flows.BatchNorm, which keeps running statistics, for a layer with both directions"
        )
