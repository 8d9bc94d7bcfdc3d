"""Elementwise maps between the real line and bounded supports (intervals, circles).

Points outside a layer's support have zero density: the density direction returns a log-det of
``−inf`` there (never NaN), so ``log_prob`` is ``−inf`` rather than silently wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from .base import Flow, Reverse


def _batch_sum(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).sum(1)


def _outside_to_minus_inf(log_det: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    return torch.where(inside.flatten(1).all(1), log_det, -torch.inf)


class Sigmoid(Flow):
    r"""``x = (σ(z) − α)/(1 − 2α)`` elementwise, mapping the real line onto ``(−α/(1 − 2α), (1 − α)/(1 − 2α))``,
    which is ``(0, 1)`` for the default ``α = 0``.

    ``log|det ∂x/∂z| = −Σ (softplus(z) + softplus(−z)) − n log(1 − 2α)`` over the event's ``n``
    elements. Both directions are cheap; the inverse is ``z = logit(y)`` with ``y = α + (1 − 2α) x``,
    and outside the image (``y ∉ (0, 1)``) its log-det is ``−inf``. Use it last in a flow for data on
    an interval (after an affine map for ``(a, b)``). With ``α > 0`` the inverse is the logit
    preprocessing of RealNVP (Dinh et al. 2017, https://arxiv.org/abs/1605.08803) for images on
    ``[0, 1]``: ``α`` keeps the logit's argument away from 0 and 1, so data at the ends of
    ``[0, 1]`` have a finite density.
    """

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = -_batch_sum(F.softplus(z) + F.softplus(-z))
        if not self.alpha:
            return torch.sigmoid(z), log_det
        squeeze = 1 - 2 * self.alpha
        return (torch.sigmoid(z) - self.alpha) / squeeze, log_det - z[0].numel() * math.log(squeeze)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.alpha + (1 - 2 * self.alpha) * x if self.alpha else x
        inside = (y > 0) & (y < 1)
        safe = y.clamp(torch.finfo(x.dtype).tiny, 1 - torch.finfo(x.dtype).eps)
        log_y, log_1my = torch.log(safe), torch.log1p(-safe)
        log_det = -_batch_sum(log_y + log_1my)
        if self.alpha:
            log_det = x[0].numel() * math.log(1 - 2 * self.alpha) + log_det
        return log_y - log_1my, _outside_to_minus_inf(log_det, inside)


class Tanh(Flow):
    r"""``x = tanh(z)`` elementwise, mapping the real line onto ``(−1, 1)``.

    ``log|det| = Σ log(1 − tanh² z) = Σ 2(log 2 − z − softplus(−2z))`` (stable for large ``|z|``).
    Both directions cheap: ``z = atanh(x)``; outside ``(−1, 1)`` the inverse log-det is ``−inf``.
    """

    @staticmethod
    def _log_derivative(z: torch.Tensor) -> torch.Tensor:
        return _batch_sum(2 * (math.log(2.0) - z - F.softplus(-2 * z)))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(z), self._log_derivative(z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = x.abs() < 1
        z = torch.atanh(x.clamp(-1 + torch.finfo(x.dtype).eps, 1 - torch.finfo(x.dtype).eps))
        return z, _outside_to_minus_inf(-self._log_derivative(z), inside)


def _wrap(values: torch.Tensor, bound) -> torch.Tensor:
    return torch.remainder(values + bound, 2 * bound) - bound


class _Periodic(Flow):
    def __init__(self, ind: Iterable[int], bound: float | torch.Tensor = 1.0):
        super().__init__()
        self.ind = [int(i) for i in ind]
        if torch.is_tensor(bound):
            self.register_buffer("bound", bound)
        else:
            if not bound > 0:
                raise ValueError(f"bound must be positive, got {bound}")
            self.bound = float(bound)

    def _rotate(self, values: torch.Tensor, shift) -> torch.Tensor:
        out = values.clone()
        out[..., self.ind] = _wrap(values[..., self.ind] + shift, self.bound)
        return out


class PeriodicWrap(_Periodic):
    """Identify the coordinates ``ind`` with the circle ``[−bound, bound)``.

    ``forward`` is the identity; ``inverse`` wraps data into ``[−bound, bound)``; ``log|det| = 0``.
    Place it first in a flow (data side) for angles given in any turn. As in normflows.
    """

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z, z.new_zeros(z.shape[0])

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rotate(x, 0.0), x.new_zeros(x.shape[0])


class PeriodicShift(_Periodic):
    """Rotate the circle coordinates ``ind``: ``x = wrap(z + shift)`` on ``[−bound, bound)``.

    Volume preserving (``log|det| = 0``), both directions cheap; used between circular spline
    layers so that their fixed point at ``±bound`` moves. As in normflows.
    """

    def __init__(self, ind: Iterable[int], bound: float | torch.Tensor = 1.0, shift: float | torch.Tensor = 0.0):
        super().__init__(ind, bound)
        if torch.is_tensor(shift):
            self.register_buffer("shift", shift)
        else:
            self.shift = float(shift)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rotate(z, self.shift), z.new_zeros(z.shape[0])

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rotate(x, -self.shift), x.new_zeros(x.shape[0])


def retired_logit(alpha: float = 0.0) -> Flow:
    """What ``flows.Logit(alpha)`` was until flowforge 0.1: the logit ``(0, 1) → ℝ`` in the forward
    direction, now ``Reverse(Sigmoid(alpha))`` (the name meant the opposite direction in normflows'
    ``transforms.Logit``)."""
    return Reverse(Sigmoid(alpha))
