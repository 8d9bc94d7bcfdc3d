"""Elementwise affine layers with parameters independent of the input."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .base import EventFlow, check_shared_event_shape


class AffineConstFlow(EventFlow):
    r"""Elementwise affine map ``x = z ⊙ exp(s) + t`` with learned ``s`` and ``t``.

    ``log|det ∂x/∂z| = Σᵢ sᵢ`` (the same for every sample). Both directions are cheap
    and exact: ``z = (x − t) ⊙ exp(−s)``. Starts at the identity (``s = t = 0``).
    Used e.g. as the learned scale and shift of RealNVP (Dinh et al. 2017,
    https://arxiv.org/abs/1605.08803) and as the backbone of ActNorm.

    Args:
        shape: event shape; a size of 1 in any dimension shares the parameter along it.
        scale: learn ``s`` (otherwise ``s = 0``).
        shift: learn ``t`` (otherwise ``t = 0``).
    """

    def __init__(self, shape: int | Iterable[int], scale: bool = True, shift: bool = True):
        super().__init__(shape)
        parameter_shape = (1, *self.shape)
        if scale:
            self.s = nn.Parameter(torch.zeros(parameter_shape))
        else:
            self.register_buffer("s", torch.zeros(parameter_shape))
        if shift:
            self.t = nn.Parameter(torch.zeros(parameter_shape))
        else:
            self.register_buffer("t", torch.zeros(parameter_shape))

    def check_input(self, x: torch.Tensor) -> None:
        check_shared_event_shape(self, x, self.shape)

    def _log_det(self, x: torch.Tensor) -> torch.Tensor:
        shared = x[0].numel() // self.s.numel()
        return (shared * self.s.sum()).expand(x.shape[0])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(z)
        return torch.addcmul(self.t, z, torch.exp(self.s)), self._log_det(z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        return (x - self.t) * torch.exp(-self.s), -self._log_det(x)
