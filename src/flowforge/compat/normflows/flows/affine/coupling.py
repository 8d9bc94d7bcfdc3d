"""normflows' ``nf.flows.affine.coupling`` path: its affine couplings with normflows' numerics.

flowforge's couplings soft-clamp the log-scale of ``scale_map="exp"`` (``clamp · tanh(s / clamp)``)
by default; normflows does not. The classes here are built without the clamp, so the same weights
give normflows' outputs; pass ``clamp=`` by keyword to flowforge's classes for the bounded version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from math import prod

import torch
from torch import nn

from .....flows.affine import AffineConstFlow
from .....flows.base import Flow, as_event_shape, check_context, check_shared_event_shape
from .....flows.coupling import AffineCoupling as NativeAffineCoupling
from .....flows.coupling import AffineCouplingBlock as NativeAffineCouplingBlock
from .....flows.coupling import MaskedAffineCoupling
from ..base import zero_log_det_like_z
from ..reshape import Merge, Split

__all__ = [
    "AffineConstFlow",
    "AffineCoupling",
    "AffineCouplingBlock",
    "CCAffineConst",
    "Flow",
    "MaskedAffineFlow",
    "Merge",
    "Split",
    "zero_log_det_like_z",
]


class CCAffineConst(Flow):
    r"""normflows' ``CCAffineConst(shape, num_classes)``: an elementwise affine map with class-conditional
    parameters, ``x = z ⊙ exp(s + y S) + (t + y T)`` for a (one-hot or soft) class vector ``y`` of
    ``num_classes`` entries, ``log|det| = Σ (s + y S)`` (times the number of positions a parameter
    is shared over, for sizes of 1 in ``shape``). ``s, t`` have shape ``(1, *shape)``, ``S, T``
    (``s_cc``, ``t_cc``) ``(num_classes, prod(shape))``; all start at zero (the identity). Both
    directions cheap. The class vector is the layer's context: ``forward(z, y)``, ``inverse(x, y)``.
    """

    takes_context = True

    def __init__(self, shape: int | Iterable[int], num_classes: int):
        super().__init__()
        self.shape = as_event_shape(shape)
        self.num_classes = int(num_classes)
        size = prod(self.shape)
        self.s = nn.Parameter(torch.zeros(1, *self.shape))
        self.t = nn.Parameter(torch.zeros(1, *self.shape))
        self.s_cc = nn.Parameter(torch.zeros(self.num_classes, size))
        self.t_cc = nn.Parameter(torch.zeros(self.num_classes, size))

    def _parameters_for(self, v: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_shared_event_shape(self, v, self.shape)
        check_context(self, y, v.shape[0], self.num_classes)
        s = self.s + (y @ self.s_cc).view(-1, *self.shape)
        t = self.t + (y @ self.t_cc).view(-1, *self.shape)
        shared = v[0].numel() // prod(self.shape)
        return s, t, shared * s.flatten(1).sum(1)

    # The class vector is required: normflows' signature, not Flow's optional context.
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        s, t, log_det = self._parameters_for(z, y)
        return z * torch.exp(s) + t, log_det

    def inverse(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        s, t, log_det = self._parameters_for(x, y)
        return (x - t) * torch.exp(-s), -log_det


class AffineCoupling(NativeAffineCoupling):
    r"""normflows' ``AffineCoupling(param_map, scale=True, scale_map="exp")`` on a split ``[z1, z2]``:
    ``x2 = z2 ⊙ a + m`` with ``(m, ŝ)`` interleaved in ``param_map(z1)`` and ``a = exp(ŝ)`` (``"exp"``,
    not clamped, as normflows), ``1/σ(ŝ + 2)`` (``"sigmoid"``) or ``σ(ŝ + 2)`` (``"sigmoid_inv"``);
    ``log|det| = Σ log a``. flowforge's :class:`~flowforge.flows.AffineCoupling` without its clamp."""

    def __init__(self, param_map: nn.Module, scale: bool = True, scale_map: str = "exp"):
        super().__init__(param_map, scale, scale_map, clamp=None)


class AffineCouplingBlock(NativeAffineCouplingBlock):
    """normflows' ``AffineCouplingBlock(param_map, scale=True, scale_map="exp", split_mode="channel")``:
    ``Split -> AffineCoupling -> Merge`` with normflows' (unclamped) :class:`AffineCoupling`; layers in
    ``flows`` as in normflows' ``state_dict``."""

    def __init__(self, param_map: nn.Module, scale: bool = True, scale_map: str = "exp", split_mode: str = "channel"):
        super().__init__(param_map, scale, scale_map, split_mode)
        self.flows[1] = AffineCoupling(param_map, scale, scale_map)


class MaskedAffineFlow(MaskedAffineCoupling):
    r"""normflows' ``MaskedAffineFlow(b, t=None, s=None)`` (RealNVP, https://arxiv.org/abs/1605.08803):
    ``x = b ⊙ z + (1 − b) ⊙ (z ⊙ exp(s(b ⊙ z)) + t(b ⊙ z))``, ``log|det| = Σ (1 − b) ⊙ s(b ⊙ z)``; ones
    in ``b`` mark the kept coordinates. flowforge's :class:`~flowforge.flows.MaskedAffineCoupling`
    without its log-scale clamp, so the numerics are normflows'. A missing ``s`` or ``t`` is zero. As in
    normflows, ``b`` may hold values other than 0 and 1 (the formula is applied as written; the map is
    then no longer a coupling layer with an exact inverse)."""

    binary_mask = False

    def __init__(
        self,
        b: torch.Tensor,
        t: Callable[[torch.Tensor], torch.Tensor] | None = None,
        s: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__(b, t, s, clamp=None)
