"""Coupling layers: half of the coordinates, left unchanged, parameterise an elementwise map of the rest."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Flow, as_event_shape, check_event_shape


def soft_clamp(log_scale: torch.Tensor, bound: float | None) -> torch.Tensor:
    """``bound · tanh(log_scale / bound)``: the identity near 0, never beyond ``±bound`` (None: no clamp)."""
    return log_scale if bound is None else bound * torch.tanh(log_scale / bound)


def _check_conditioner_output(name: str, value: torch.Tensor, expected: torch.Size) -> torch.Tensor:
    if value.shape != expected:
        raise ValueError(
            f"conditioner {name} returned shape {tuple(value.shape)}, expected {tuple(expected)} (the input's shape); "
            "check the width of its last layer"
        )
    return value


class MaskedAffineFlow(Flow):
    r"""Affine coupling with a binary mask ``b`` (RealNVP, Dinh et al. 2017, https://arxiv.org/abs/1605.08803).

    ``x = b ⊙ z + (1 − b) ⊙ (z ⊙ exp(s(b ⊙ z)) + t(b ⊙ z))``,
    ``log|det ∂x/∂z| = Σ (1 − b) ⊙ s(b ⊙ z)``. With ``s = None`` it is the additive
    (volume-preserving) coupling of NICE (Dinh et al. 2015, https://arxiv.org/abs/1410.8516).

    Both directions are cheap (one pass of ``s`` and ``t``):
    ``z = b ⊙ x + (1 − b) ⊙ (x − t(b ⊙ x)) ⊙ exp(−s(b ⊙ x))``. The log-scale is soft-clamped to
    ``±clamp`` (``clamp · tanh(s / clamp)``), so a large network output cannot overflow ``exp``.
    The networks must return the input's shape: a network of the wrong width is an error here
    (normflows broadcasts an undersized output silently).

    Args:
        b: mask of the event shape; ones mark the coordinates that condition the others.
        t: translation network, or None for no translation.
        s: log-scale network, or None for an additive coupling.
        clamp: soft bound of the log-scale, or None for none.
    """

    def __init__(
        self,
        b: torch.Tensor,
        t: Callable[[torch.Tensor], torch.Tensor] | None = None,
        s: Callable[[torch.Tensor], torch.Tensor] | None = None,
        clamp: float | None = 10.0,
    ):
        super().__init__()
        b = torch.as_tensor(b, dtype=torch.get_default_dtype())
        as_event_shape(b.shape)
        if not ((b == 0) | (b == 1)).all():
            raise ValueError("MaskedAffineFlow mask b must contain only 0 and 1")
        if clamp is not None and not clamp > 0:
            raise ValueError(f"clamp must be positive or None, got {clamp}")
        self.register_buffer("b", b.unsqueeze(0))
        self.t = t
        self.s = s
        self.clamp = clamp

    def _log_scale_and_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        log_scale = (
            None if self.s is None else soft_clamp(_check_conditioner_output("s", self.s(kept), kept.shape), self.clamp)
        )
        shift = None if self.t is None else _check_conditioner_output("t", self.t(kept), kept.shape)
        return log_scale, shift

    def _log_det(self, log_scale: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if log_scale is None:
            return like.new_zeros(like.shape[0])
        return ((1 - self.b) * log_scale).flatten(1).sum(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_event_shape(self, z, self.b.shape[1:])
        kept = self.b * z
        log_scale, shift = self._log_scale_and_shift(kept)
        changed = z if log_scale is None else z * torch.exp(log_scale)
        if shift is not None:
            changed = changed + shift
        return kept + (1 - self.b) * changed, self._log_det(log_scale, z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_event_shape(self, x, self.b.shape[1:])
        kept = self.b * x
        log_scale, shift = self._log_scale_and_shift(kept)
        changed = x if shift is None else x - shift
        if log_scale is not None:
            changed = changed * torch.exp(-log_scale)
        return kept + (1 - self.b) * changed, -self._log_det(log_scale, x)


def alternating_mask(features: int, even: bool = True) -> torch.Tensor:
    """``[1, 0, 1, 0, …]`` (or its complement when ``even`` is False)."""
    mask = (torch.arange(features) % 2 == 0).to(torch.get_default_dtype())
    return mask if even else 1 - mask
