"""Affine autoregressive flows on a MADE conditioner: MAF and IAF."""

from __future__ import annotations

import torch

from ..nets.made import MADE
from .base import EventFlow
from .coupling import soft_clamp


class MaskedAffineAutoregressive(EventFlow):
    r"""Masked autoregressive flow layer (MAF; Papamakarios et al. 2017, https://arxiv.org/abs/1705.07057).

    ``xᵢ = zᵢ exp(sᵢ(x_{<i}, c)) + mᵢ(x_{<i}, c)``, ``log|det ∂x/∂z| = Σᵢ sᵢ``, with ``(m, s)`` from a
    :class:`~flowforge.nets.MADE` on ``x`` and an optional context ``c``; ``s`` is soft-clamped to
    ``±clamp``.

    Cheap direction: ``inverse`` (density), one MADE pass:
    ``zᵢ = (xᵢ − mᵢ(x)) exp(−sᵢ(x))``. ``forward`` (sampling) takes D sequential passes, each fixing
    one more coordinate. Starts at the identity (MADE's output layer is zero).
    """

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        order: torch.Tensor | None = None,
        clamp: float | None = 5.0,
    ):
        super().__init__((features,))
        self.features = features
        self.clamp = clamp
        self.made = MADE(features, hidden_features, context_features, num_blocks, 2, order)

    def _shift_and_log_scale(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.made(x, context)
        return out[..., 0], soft_clamp(out[..., 1], self.clamp)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(z)
        x = torch.zeros_like(z)
        for _ in range(self.features):
            shift, log_scale = self._shift_and_log_scale(x, context)
            x = z * torch.exp(log_scale) + shift
        return x, log_scale.sum(1)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        shift, log_scale = self._shift_and_log_scale(x, context)
        return (x - shift) * torch.exp(-log_scale), -log_scale.sum(1)


class InverseAutoregressive(EventFlow):
    r"""Inverse autoregressive flow layer (IAF; Kingma et al. 2016, https://arxiv.org/abs/1606.04934).

    The MAF layer run backwards: ``xᵢ = (zᵢ − mᵢ(z_{<i}, c)) exp(−sᵢ(z_{<i}, c))``, so the
    parameters depend on the *input* ``z``. Cheap direction: ``forward`` (sampling, one MADE pass),
    as variational inference wants; ``inverse`` (density) takes D sequential passes.
    """

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        order: torch.Tensor | None = None,
        clamp: float | None = 5.0,
    ):
        super().__init__((features,))
        self.maf = MaskedAffineAutoregressive(features, hidden_features, context_features, num_blocks, order, clamp)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(z)
        return self.maf.inverse(z, context)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        return self.maf(x, context)
