"""normflows' ``nf.flows.neural_spline.wrapper`` path: its four spline layers on flowforge's
:class:`~flowforge.flows.RationalQuadraticCoupling` and :class:`~flowforge.flows.RationalQuadraticAutoregressive`.

Mask convention: normflows' masks mark the coordinates that are *transformed* (entries > 0); its
default is the alternating mask that transforms the odd coordinates (the even ones with
``reverse_mask``). flowforge's masks mark the coordinates that are *kept*. :func:`kept_mask`
converts, so the same arguments keep the same coordinates as in normflows.
"""

from __future__ import annotations

import torch
from torch import nn

from .....flows.coupling import alternating_mask
from .....flows.splines import RationalQuadraticAutoregressive, RationalQuadraticCoupling


def kept_mask(features: int, reverse_mask: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
    """flowforge's mask (1: kept) for normflows' ``mask`` (> 0: transformed) or, without one, for its
    alternating default: the odd coordinates transformed, or the even ones with ``reverse_mask``."""
    if mask is None:
        return alternating_mask(features, even=not reverse_mask)
    return (torch.as_tensor(mask) <= 0).to(torch.get_default_dtype())


def _autoregressive_order(features: int, permute_mask: bool) -> torch.Tensor | None:
    """normflows' ``permute_mask``: a random autoregressive order (None: the natural one)."""
    return torch.randperm(features) if permute_mask else None


class CoupledRationalQuadraticSpline(RationalQuadraticCoupling):
    """normflows' coupling neural spline layer, ``(num_input_channels, num_blocks, num_hidden_channels,
    num_context_channels=None, num_bins=8, tails="linear", tail_bound=3.0, activation=nn.ReLU,
    dropout_probability=0.0, reverse_mask=False, init_identity=True)``, on
    :class:`~flowforge.flows.RationalQuadraticCoupling` with normflows' mask convention
    (:func:`kept_mask`). Only linear tails: circular coordinates are
    :class:`CircularCoupledRationalQuadraticSpline`'s."""

    def __init__(
        self,
        num_input_channels: int,
        num_blocks: int,
        num_hidden_channels: int,
        num_context_channels: int | None = None,
        num_bins: int = 8,
        tails: str = "linear",
        tail_bound: float = 3.0,
        activation=nn.ReLU,
        dropout_probability: float = 0.0,
        reverse_mask: bool = False,
        init_identity: bool = True,
    ):
        if tails != "linear":
            raise ValueError(
                f"tails must be 'linear' (use CircularCoupledRationalQuadraticSpline for angles), got {tails!r}"
            )
        super().__init__(
            num_input_channels, num_hidden_channels, num_blocks, num_bins, tail_bound,
            mask=kept_mask(num_input_channels, reverse_mask), context_features=num_context_channels,
            activation=activation, dropout_probability=dropout_probability, init_identity=init_identity,
        )  # fmt: skip


class CircularCoupledRationalQuadraticSpline(RationalQuadraticCoupling):
    """normflows' coupling neural spline layer with the coordinates ``ind_circ`` on the circle
    ``[−tail_bound, tail_bound)``: ``(num_input_channels, num_blocks, num_hidden_channels, ind_circ,
    num_context_channels=None, num_bins=8, tail_bound=3.0, activation=nn.ReLU,
    dropout_probability=0.0, reverse_mask=False, mask=None, init_identity=True)``, on
    :class:`~flowforge.flows.RationalQuadraticCoupling` (``circular=ind_circ``) with normflows' mask
    convention (:func:`kept_mask`)."""

    def __init__(
        self,
        num_input_channels: int,
        num_blocks: int,
        num_hidden_channels: int,
        ind_circ,
        num_context_channels: int | None = None,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        activation=nn.ReLU,
        dropout_probability: float = 0.0,
        reverse_mask: bool = False,
        mask: torch.Tensor | None = None,
        init_identity: bool = True,
    ):
        super().__init__(
            num_input_channels, num_hidden_channels, num_blocks, num_bins, tail_bound,
            mask=kept_mask(num_input_channels, reverse_mask, mask), circular=list(ind_circ),
            context_features=num_context_channels, activation=activation,
            dropout_probability=dropout_probability, init_identity=init_identity,
        )  # fmt: skip


class AutoregressiveRationalQuadraticSpline(RationalQuadraticAutoregressive):
    """normflows' autoregressive neural spline layer, ``(num_input_channels, num_blocks,
    num_hidden_channels, num_context_channels=None, num_bins=8, tail_bound=3.0, activation=nn.ReLU,
    dropout_probability=0.0, permute_mask=False, init_identity=True)``, on
    :class:`~flowforge.flows.RationalQuadraticAutoregressive`; ``permute_mask`` draws a random
    autoregressive order; ``init_identity=False`` gives the MADE's output layer a random start."""

    def __init__(
        self,
        num_input_channels: int,
        num_blocks: int,
        num_hidden_channels: int,
        num_context_channels: int | None = None,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        activation=nn.ReLU,
        dropout_probability: float = 0.0,
        permute_mask: bool = False,
        init_identity: bool = True,
    ):
        super().__init__(
            num_input_channels, num_hidden_channels, num_blocks, num_bins, tail_bound,
            context_features=num_context_channels, order=_autoregressive_order(num_input_channels, permute_mask),
            activation=activation, dropout_probability=dropout_probability,
        )  # fmt: skip
        if not init_identity:
            self.made.output.reset_parameters()


class CircularAutoregressiveRationalQuadraticSpline(RationalQuadraticAutoregressive):
    """normflows' autoregressive neural spline layer with the coordinates ``ind_circ`` on the circle
    ``[−tail_bound, tail_bound)``: ``(num_input_channels, num_blocks, num_hidden_channels, ind_circ,
    num_context_channels=None, num_bins=8, tail_bound=3.0, activation=nn.ReLU,
    dropout_probability=0.0, permute_mask=True, init_identity=True)``, on
    :class:`~flowforge.flows.RationalQuadraticAutoregressive` (``circular=ind_circ``)."""

    def __init__(
        self,
        num_input_channels: int,
        num_blocks: int,
        num_hidden_channels: int,
        ind_circ,
        num_context_channels: int | None = None,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        activation=nn.ReLU,
        dropout_probability: float = 0.0,
        permute_mask: bool = True,
        init_identity: bool = True,
    ):
        super().__init__(
            num_input_channels, num_hidden_channels, num_blocks, num_bins, tail_bound, circular=list(ind_circ),
            context_features=num_context_channels, order=_autoregressive_order(num_input_channels, permute_mask),
            activation=activation, dropout_probability=dropout_probability,
        )  # fmt: skip
        if not init_identity:
            self.made.output.reset_parameters()


__all__ = [
    "AutoregressiveRationalQuadraticSpline",
    "CircularAutoregressiveRationalQuadraticSpline",
    "CircularCoupledRationalQuadraticSpline",
    "CoupledRationalQuadraticSpline",
    "kept_mask",
]
