"""normflows' ``nf.flows.neural_spline.wrapper``: its four neural-spline layers, wrapping nflows'
classes as normflows does (``self.prqct``: :class:`~.coupling.PiecewiseRationalQuadraticCoupling`;
``self.mprqat``: :class:`~.autoregressive.MaskedPiecewiseRationalQuadraticAutoregressive`), so that
normflows checkpoints load unchanged and give the same numbers.

Direction: these layers' ``forward`` (normflows' sampling direction) is the wrapped class's
``inverse`` and vice versa. For the autoregressive layers the density direction (``inverse``) is
the cheap one; sampling takes ``D`` MADE passes. Masks (normflows'): entries > 0 mark the
coordinates that are *transformed*; the default alternating mask transforms the even coordinates
(the odd ones with ``reverse_mask``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .....flows.base import Flow
from ...nets.resnet import ResidualNet
from ...utils.masks import create_alternating_binary_mask
from ...utils.nn import PeriodicFeaturesElementwise
from ...utils.splines import DEFAULT_MIN_DERIVATIVE
from .autoregressive import MaskedPiecewiseRationalQuadraticAutoregressive
from .coupling import PiecewiseRationalQuadraticCoupling

Bound = float | torch.Tensor


class _Wrapped(Flow):
    """A normflows wrapper: ``forward``/``inverse`` are the wrapped layer's ``inverse``/``forward``,
    log-dets flattened to ``(batch,)``."""

    @property
    def inner(self) -> Any:
        """The wrapped nflows-style layer."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, log_det = self.inner.inverse(z, context)
        return x, log_det.view(-1)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_det = self.inner(x, context)
        return z, log_det.view(-1)


class _Coupled(_Wrapped):
    prqct: PiecewiseRationalQuadraticCoupling

    @property
    def inner(self) -> Any:
        return self.prqct


class _Autoregressive(_Wrapped):
    mprqat: MaskedPiecewiseRationalQuadraticAutoregressive

    @property
    def inner(self) -> Any:
        return self.mprqat


def _identity_bias() -> float:
    return math.log(math.exp(1 - DEFAULT_MIN_DERIVATIVE) - 1)


class CoupledRationalQuadraticSpline(_Coupled):
    """normflows' ``CoupledRationalQuadraticSpline(num_input_channels, num_blocks, num_hidden_channels,
    num_context_channels=None, num_bins=8, tails="linear", tail_bound=3.0, activation=nn.ReLU,
    dropout_probability=0.0, reverse_mask=False)``: a neural spline coupling (Durkan et al. 2019)
    whose conditioner is a :class:`~flowforge.compat.normflows.nets.ResidualNet` (``activation()``
    between layers), with an unconditional spline on the conditioning coordinates."""

    def __init__(
        self,
        num_input_channels: int,
        num_blocks: int,
        num_hidden_channels: int,
        num_context_channels: int | None = None,
        num_bins: int = 8,
        tails: str | None = "linear",
        tail_bound: Bound = 3.0,
        activation: type[nn.Module] = nn.ReLU,
        dropout_probability: float = 0.0,
        reverse_mask: bool = False,
    ):
        super().__init__()
        self.takes_context = num_context_channels is not None

        def transform_net(in_features: int, out_features: int) -> nn.Module:
            return ResidualNet(
                in_features, out_features, num_hidden_channels, num_context_channels, num_blocks, activation(),
                dropout_probability, use_batch_norm=False,
            )  # fmt: skip

        self.prqct = PiecewiseRationalQuadraticCoupling(
            create_alternating_binary_mask(num_input_channels, even=reverse_mask), transform_net, num_bins=num_bins,
            tails=tails, tail_bound=tail_bound, apply_unconditional_transform=True,
        )  # fmt: skip


class CircularCoupledRationalQuadraticSpline(_Coupled):
    """normflows' ``CircularCoupledRationalQuadraticSpline(num_input_channels, num_blocks,
    num_hidden_channels, ind_circ, num_context_channels=None, num_bins=8, tail_bound=3.0,
    activation=nn.ReLU, dropout_probability=0.0, reverse_mask=False, mask=None, init_identity=True)``:
    as :class:`CoupledRationalQuadraticSpline`, with the coordinates ``ind_circ`` on the circle
    ``[−tail_bound, tail_bound)`` (circular splines; as conditioners they enter the net as periodic
    features). ``tail_bound`` may be a tensor with one bound per coordinate; ``mask`` (> 0:
    transformed) replaces the alternating one.

    Difference kept from normflows: the periodic features of a conditioning angle use that angle's
    own bound, ``π/tail_bound[feature]``; normflows indexes ``tail_bound`` by the position among
    the conditioning coordinates instead, which gives other coordinates' periods when the bounds
    differ. A normflows checkpoint carries its scales (a buffer) and still loads and reproduces
    normflows' outputs."""

    def __init__(
        self,
        num_input_channels: int,
        num_blocks: int,
        num_hidden_channels: int,
        ind_circ: Iterable[int],
        num_context_channels: int | None = None,
        num_bins: int = 8,
        tail_bound: Bound = 3.0,
        activation: type[nn.Module] = nn.ReLU,
        dropout_probability: float = 0.0,
        reverse_mask: bool = False,
        mask: torch.Tensor | Sequence[int] | None = None,
        init_identity: bool = True,
    ):
        super().__init__()
        self.takes_context = num_context_channels is not None
        if mask is None:
            mask = create_alternating_binary_mask(num_input_channels, even=reverse_mask)
        mask = torch.as_tensor(mask)
        circular = {int(i) for i in ind_circ}
        identity = torch.arange(num_input_channels).masked_select(mask <= 0).tolist()
        circular_positions = [position for position, feature in enumerate(identity) if feature in circular]
        scale: Bound
        if isinstance(tail_bound, torch.Tensor):
            scale = math.pi / tail_bound[[identity[p] for p in circular_positions]]
        else:
            scale = math.pi / tail_bound

        def transform_net(in_features: int, out_features: int) -> nn.Module:
            periodic = (
                PeriodicFeaturesElementwise(in_features, circular_positions, scale) if circular_positions else None
            )
            net = ResidualNet(
                in_features, out_features, num_hidden_channels, num_context_channels, num_blocks, activation(),
                dropout_probability, use_batch_norm=False, preprocessing=periodic,
            )  # fmt: skip
            if init_identity:
                nn.init.constant_(net.final_layer.weight, 0.0)
                nn.init.constant_(net.final_layer.bias, _identity_bias())
            return net

        tails = ["circular" if i in circular else "linear" for i in range(num_input_channels)]
        self.prqct = PiecewiseRationalQuadraticCoupling(
            mask, transform_net, num_bins=num_bins, tails=tails, tail_bound=tail_bound,
            apply_unconditional_transform=True,
        )  # fmt: skip


class AutoregressiveRationalQuadraticSpline(_Autoregressive):
    """normflows' ``AutoregressiveRationalQuadraticSpline(num_input_channels, num_blocks,
    num_hidden_channels, num_context_channels=None, num_bins=8, tail_bound=3, activation=nn.ReLU,
    dropout_probability=0.0, permute_mask=False, init_identity=True)``: an autoregressive neural
    spline layer with linear tails; its MADE (residual blocks, ``activation()``) has a randomly
    permuted input order with ``permute_mask``."""

    def __init__(
        self,
        num_input_channels: int,
        num_blocks: int,
        num_hidden_channels: int,
        num_context_channels: int | None = None,
        num_bins: int = 8,
        tail_bound: Bound = 3,
        activation: type[nn.Module] = nn.ReLU,
        dropout_probability: float = 0.0,
        permute_mask: bool = False,
        init_identity: bool = True,
    ):
        super().__init__()
        self.takes_context = num_context_channels is not None
        self.mprqat = MaskedPiecewiseRationalQuadraticAutoregressive(
            num_input_channels, num_hidden_channels, num_context_channels, num_bins, "linear", tail_bound,
            num_blocks, True, False, permute_mask, activation(), dropout_probability, False, init_identity,
        )  # fmt: skip


class CircularAutoregressiveRationalQuadraticSpline(_Autoregressive):
    """normflows' ``CircularAutoregressiveRationalQuadraticSpline(num_input_channels, num_blocks,
    num_hidden_channels, ind_circ, num_context_channels=None, num_bins=8, tail_bound=3,
    activation=nn.ReLU, dropout_probability=0.0, permute_mask=True, init_identity=True)``: as
    :class:`AutoregressiveRationalQuadraticSpline` with the coordinates ``ind_circ`` on the circle
    (circular splines, periodic features in the MADE); ``tail_bound`` may be a per-coordinate tensor."""

    def __init__(
        self,
        num_input_channels: int,
        num_blocks: int,
        num_hidden_channels: int,
        ind_circ: Iterable[int],
        num_context_channels: int | None = None,
        num_bins: int = 8,
        tail_bound: Bound = 3,
        activation: type[nn.Module] = nn.ReLU,
        dropout_probability: float = 0.0,
        permute_mask: bool = True,
        init_identity: bool = True,
    ):
        super().__init__()
        self.takes_context = num_context_channels is not None
        circular = {int(i) for i in ind_circ}
        tails = ["circular" if i in circular else "linear" for i in range(num_input_channels)]
        self.mprqat = MaskedPiecewiseRationalQuadraticAutoregressive(
            num_input_channels, num_hidden_channels, num_context_channels, num_bins, tails, tail_bound,
            num_blocks, True, False, permute_mask, activation(), dropout_probability, False, init_identity,
        )  # fmt: skip


__all__ = [
    "AutoregressiveRationalQuadraticSpline",
    "CircularAutoregressiveRationalQuadraticSpline",
    "CircularCoupledRationalQuadraticSpline",
    "CoupledRationalQuadraticSpline",
]
