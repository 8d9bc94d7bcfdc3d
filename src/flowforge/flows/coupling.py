"""Coupling layers: half of the coordinates, left unchanged, parameterise an elementwise map of the rest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..nets.made import Activation, as_activation
from ..nets.residual import ResidualNet
from .base import EventFlow, Flow, as_event_shape, check_event_shape, pull_back, push_forward
from .reshape import Merge, Split


def soft_clamp(log_scale: torch.Tensor, bound: float | None) -> torch.Tensor:
    """``bound · tanh(log_scale / bound)``: the identity near 0, never beyond ``±bound`` (None: no clamp)."""
    return log_scale if bound is None else bound * torch.tanh(log_scale / bound)


def affine_transform(
    values: torch.Tensor,
    shift: torch.Tensor | None,
    log_scale: torch.Tensor | None,
    inverse: bool = False,
    clamp: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""The elementwise affine map of every affine coupling and autoregressive layer.

    Forward ``v ⊙ exp(s) + t``, inverse ``(v − t) ⊙ exp(−s)``, with ``s`` the log-scale soft-clamped
    to ``±clamp`` (:func:`soft_clamp`). A missing shift is 0; a missing log-scale is 0 (an additive,
    volume-preserving map). Returns the output and the elementwise log-derivative of the direction
    computed (``s`` or ``−s``), or None without a log-scale; :func:`row_log_det` sums it per row.
    """
    if log_scale is not None:
        log_scale = soft_clamp(log_scale, clamp)
    if inverse:
        out = values if shift is None else values - shift
        if log_scale is None:
            return out, None
        return out * torch.exp(-log_scale), -log_scale
    out = values if log_scale is None else values * torch.exp(log_scale)
    return (out if shift is None else out + shift), log_scale


def row_log_det(
    log_derivative: torch.Tensor | None, like: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``Σ weight ⊙ log_derivative`` over all but the batch axis (zeros of ``like``'s batch when None)."""
    if log_derivative is None:
        return like.new_zeros(like.shape[0])
    return (log_derivative if weight is None else weight * log_derivative).flatten(1).sum(1)


def _check_conditioner_output(name: str, value: torch.Tensor, expected: torch.Size) -> torch.Tensor:
    if value.shape != expected:
        raise ValueError(
            f"conditioner {name} returned shape {tuple(value.shape)}, expected {tuple(expected)} (the input's shape); "
            "check the width of its last layer"
        )
    return value


class MaskedAffineCoupling(Flow):
    r"""Affine coupling with a binary mask ``b`` (RealNVP, Dinh et al. 2017, https://arxiv.org/abs/1605.08803),
    in the paper's notation: mask ``b``, log-scale net ``s``, translation net ``t``.

    ``x = b ⊙ z + (1 − b) ⊙ (z ⊙ exp(s(b ⊙ z)) + t(b ⊙ z))``,
    ``log|det ∂x/∂z| = Σ (1 − b) ⊙ s(b ⊙ z)``. With ``s = None`` it is the additive
    (volume-preserving) coupling of NICE (Dinh et al. 2015, https://arxiv.org/abs/1410.8516).

    Both directions are cheap (one pass of ``s`` and ``t``):
    ``z = b ⊙ x + (1 − b) ⊙ (x − t(b ⊙ x)) ⊙ exp(−s(b ⊙ x))``. The log-scale is soft-clamped to
    ``±clamp`` (``clamp · tanh(s / clamp)``), so a large network output cannot overflow ``exp``.
    The mask may have any event shape (vectors or images). The networks must return the input's
    shape: a network of the wrong width is an error.

    Args:
        b: mask of the event shape; ones mark the coordinates that are kept and condition the others.
        t: translation network, or None for no translation.
        s: log-scale network, or None for an additive coupling.
        clamp: soft bound of the log-scale, or None for none.
    """

    b: torch.Tensor
    # Only a 0/1 mask makes the map a coupling (invertible, with this log-det); a subclass that must
    # reproduce another library's formula for any mask values may turn the check off.
    binary_mask: ClassVar[bool] = True

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
        if self.binary_mask and not ((b == 0) | (b == 1)).all():
            raise ValueError(f"{type(self).__name__} mask b must contain only 0 and 1")
        if clamp is not None and not clamp > 0:
            raise ValueError(f"clamp must be positive or None, got {clamp}")
        self.register_buffer("b", b.unsqueeze(0))
        self.t = t
        self.s = s
        self.clamp = clamp

    def _transform(self, v: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        check_event_shape(self, v, self.b.shape[1:])
        kept = self.b * v
        log_scale = None if self.s is None else _check_conditioner_output("s", self.s(kept), kept.shape)
        shift = None if self.t is None else _check_conditioner_output("t", self.t(kept), kept.shape)
        changed, log_derivative = affine_transform(v, shift, log_scale, inverse, self.clamp)
        moved = 1 - self.b
        return kept + moved * changed, row_log_det(log_derivative, v, moved)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(z, inverse=False)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(x, inverse=True)


def alternating_mask(features: int, even: bool = True) -> torch.Tensor:
    """``[1, 0, 1, 0, …]`` (or its complement when ``even`` is False)."""
    mask = (torch.arange(features) % 2 == 0).to(torch.get_default_dtype())
    return mask if even else 1 - mask


def coupling_indices(features: int, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept (mask 1) and transformed (mask 0) coordinates of a 0/1 ``mask`` of length ``features``
    (default: :func:`alternating_mask`); each part must be non-empty."""
    mask = alternating_mask(features) if mask is None else torch.as_tensor(mask)
    if tuple(mask.shape) != (features,) or not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"mask must be a 0/1 vector of length {features}, got shape {tuple(mask.shape)}")
    kept, moved = torch.nonzero(mask == 1).flatten(), torch.nonzero(mask == 0).flatten()
    if len(kept) == 0 or len(moved) == 0:
        raise ValueError("mask must keep at least one coordinate and transform at least one")
    return kept, moved


class RealNVPCoupling(EventFlow):
    r"""Affine coupling on vectors with a residual-net conditioner and an optional context (RealNVP,
    Dinh et al. 2017, https://arxiv.org/abs/1605.08803).

    ``x_A = z_A``, ``x_B = z_B ⊙ exp(s) + t`` with ``(t, s) = θ(z_A, c)`` from a
    :class:`~flowforge.nets.ResidualNet`, ``s`` soft-clamped to ``±clamp``, ``A`` the coordinates
    where ``mask`` is 1; ``log|det ∂x/∂z| = Σ_B s``. Both directions cheap (one net pass):
    ``z_B = (x_B − t) ⊙ exp(−s)``. Takes a context ``c`` of ``context_features`` (an input of ``θ``)
    when built with it. Starts at the identity when ``init_identity``.
    """

    kept: torch.Tensor
    moved: torch.Tensor
    unshuffle: torch.Tensor

    def __init__(
        self,
        features: int,
        hidden_features: int,
        mask: torch.Tensor | None = None,
        context_features: int | None = None,
        num_blocks: int = 2,
        clamp: float | None = 5.0,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        init_identity: bool = True,
    ):
        super().__init__((features,))
        kept, moved = coupling_indices(features, mask)
        self.register_buffer("kept", kept)
        self.register_buffer("moved", moved)
        self.register_buffer("unshuffle", torch.argsort(torch.cat([kept, moved])))
        self.clamp = clamp
        self.takes_context = bool(context_features)  # as ResidualNet, which has no context input for 0
        self.net = ResidualNet(
            len(kept), 2 * len(moved), hidden_features, context_features, num_blocks,
            as_activation(activation), dropout_probability, init_zeros=init_identity,
        )  # fmt: skip

    def _transform(self, v: torch.Tensor, context: torch.Tensor | None, inverse: bool):
        self.check_input(v)
        kept, moved = v.index_select(1, self.kept), v.index_select(1, self.moved)
        params = self.net(kept, context).view(v.shape[0], moved.shape[1], 2)
        out, log_derivative = affine_transform(moved, params[..., 0], params[..., 1], inverse, self.clamp)
        return torch.cat([kept, out], 1).index_select(1, self.unshuffle), row_log_det(log_derivative, v)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(z, context, inverse=False)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(x, context, inverse=True)


SCALE_MAPS = ("exp", "sigmoid", "sigmoid_inv")


class AffineCoupling(Flow):
    r"""Affine coupling on a split input ``[z1, z2]`` (normflows' interface; RealNVP / Glow).

    ``x1 = z1``, ``x2 = z2 ⊙ a + m`` with ``(m, ŝ)`` interleaved along dimension 1 of
    ``param_map(z1)`` (``m = p[:, 0::2]``, ``ŝ = p[:, 1::2]``) and ``a`` by ``scale_map``:
    ``"exp"``: ``exp(clamp·tanh(ŝ/clamp))`` (soft-clamped, cannot overflow); ``"sigmoid"``:
    ``1/σ(ŝ + 2)`` (Glow); ``"sigmoid_inv"``: ``σ(ŝ + 2)``. Without ``scale`` it is additive
    (``x2 = z2 + param_map(z1)``). ``log|det| = Σ log a``. Both directions cheap. The net's output
    shape is checked: normflows broadcasts a net of the wrong width silently, flowforge raises.
    """

    def __init__(self, param_map: nn.Module, scale: bool = True, scale_map: str = "exp", clamp: float | None = 10.0):
        super().__init__()
        if scale_map not in SCALE_MAPS:
            raise ValueError(f"scale_map must be one of {SCALE_MAPS}, got {scale_map!r}")
        self.param_map = param_map
        self.scale, self.scale_map, self.clamp = scale, scale_map, clamp

    def _shift_and_log_scale(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        width_in = getattr(self.param_map, "in_features", None) or getattr(self.param_map, "in_channels", None)
        width_out = getattr(self.param_map, "out_features", None) or getattr(self.param_map, "out_channels", None)
        per_feature = 2 if self.scale else 1
        wrong_in = width_in is not None and z1.shape[1] != width_in
        wrong_out = width_out is not None and per_feature * z2.shape[1] != width_out
        if wrong_in or wrong_out:
            moved = width_out // per_feature if width_out else "?"
            raise ValueError(
                f"AffineCoupling expects input of shape whose parts have {width_in} and {moved} features or "
                f"channels (the widths of its param_map), got parts of shapes {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        params = self.param_map(z1)
        expected = (z2.shape[0], (2 if self.scale else 1) * z2.shape[1], *z2.shape[2:])
        _check_conditioner_output("param_map", params, torch.Size(expected))
        if not self.scale:
            return params, None
        shift, raw = params[:, 0::2], params[:, 1::2]
        if self.scale_map == "exp":
            return shift, raw  # soft-clamped by affine_transform
        log_sigmoid = F.logsigmoid(raw + 2)
        return shift, -log_sigmoid if self.scale_map == "sigmoid" else log_sigmoid

    def _transform(self, parts: Sequence[torch.Tensor], inverse: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        kept, moved = parts
        shift, log_scale = self._shift_and_log_scale(kept, moved)
        clamp = self.clamp if self.scale_map == "exp" else None
        out, log_derivative = affine_transform(moved, shift, log_scale, inverse, clamp)
        return [kept, out], row_log_det(log_derivative, moved)

    # A layer on the parts [z1, z2] of a Split, so its values are lists rather than Flow's tensors.
    def forward(self, z: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:  # type: ignore[override]
        return self._transform(z, inverse=False)

    def inverse(self, x: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:  # type: ignore[override]
        return self._transform(x, inverse=True)


class AffineCouplingBlock(Flow):
    """``Split(split_mode) -> AffineCoupling -> Merge(split_mode)``: an affine coupling on a tensor
    (normflows' argument order). Both directions cheap."""

    def __init__(self, param_map: nn.Module, scale: bool = True, scale_map: str = "exp", split_mode: str = "channel"):
        super().__init__()
        self.flows = nn.ModuleList([Split(split_mode), AffineCoupling(param_map, scale, scale_map), Merge(split_mode)])

    def _layers(self) -> Sequence[Flow]:
        return cast("Sequence[Flow]", self.flows)  # the three layers above

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return push_forward(self._layers(), z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pull_back(self._layers(), x)
