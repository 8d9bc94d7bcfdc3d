"""normflows' ``nf.flows.neural_spline.wrapper`` path: its four spline layers on flowforge's
:class:`~flowforge.flows.RationalQuadraticCoupling` and :class:`~flowforge.flows.RationalQuadraticAutoregressive`.

Mask convention: normflows' masks mark the coordinates that are *transformed* (entries > 0); its
default is the alternating mask that transforms the odd coordinates (the even ones with
``reverse_mask``). flowforge's masks mark the coordinates that are *kept*. :func:`kept_mask`
converts, so the same arguments keep the same coordinates as in normflows.

Each layer takes normflows' arguments in normflows' order and with its defaults, which
``help(layer)`` and ``inspect.signature`` show: the names are listed once per layer (in its
``__init__ = _spline_init(...)`` line) and the defaults once for all (``_DEFAULTS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .....flows.coupling import alternating_mask
from .....flows.splines import RationalQuadraticAutoregressive, RationalQuadraticCoupling
from ..._arguments import REQUIRED, normflows_init, signature


def kept_mask(features: int, reverse_mask: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
    """flowforge's mask (1: kept) for normflows' ``mask`` (> 0: transformed) or, without one, for its
    alternating default: the odd coordinates transformed, or the even ones with ``reverse_mask``."""
    if mask is None:
        return alternating_mask(features, even=not reverse_mask)
    return (torch.as_tensor(mask) <= 0).to(torch.get_default_dtype())


def _autoregressive_order(features: int, permute_mask: bool) -> torch.Tensor | None:
    """normflows' ``permute_mask``: a random autoregressive order (None: the natural one)."""
    return torch.randperm(features) if permute_mask else None


# normflows' defaults for the spline layers' optional arguments (the sizes and ind_circ are required).
_DEFAULTS: dict[str, Any] = {
    "num_context_channels": None, "num_bins": 8, "tails": "linear", "tail_bound": 3.0, "activation": nn.ReLU,
    "dropout_probability": 0.0, "reverse_mask": False, "mask": None, "permute_mask": False, "init_identity": True,
}  # fmt: skip


def _spline_init(build: Callable[[Any, dict[str, Any]], None], names: str, **defaults: Any) -> Callable[..., None]:
    """The ``__init__`` of a normflows spline layer: ``num_input_channels, num_blocks,
    num_hidden_channels``, then the parameters ``names``, in that order, with normflows' defaults
    (``_DEFAULTS``, updated by ``defaults``); ``build`` maps them onto the native layer."""
    defaults = {**_DEFAULTS, **defaults}
    names = "num_input_channels num_blocks num_hidden_channels " + names
    return normflows_init(signature((name, defaults.get(name, REQUIRED)) for name in names.split()), build)


def _native_arguments(a: dict[str, Any]) -> dict[str, Any]:
    """The arguments, by flowforge's names, that both native spline layers take, from normflows' ``a``."""
    return {
        "features": a["num_input_channels"], "hidden_features": a["num_hidden_channels"], "num_blocks": a["num_blocks"],
        "num_bins": a["num_bins"], "tail_bound": a["tail_bound"], "circular": list(a.get("ind_circ", ())),
        "context_features": a["num_context_channels"], "activation": a["activation"],
        "dropout_probability": a["dropout_probability"],
    }  # fmt: skip


def _coupling(layer: RationalQuadraticCoupling, a: dict[str, Any]) -> None:
    """Build ``layer`` from normflows' coupling spline arguments ``a``, with its mask convention."""
    if a.get("tails", "linear") != "linear":
        raise ValueError(
            f"tails must be 'linear' (use CircularCoupledRationalQuadraticSpline for angles), got {a['tails']!r}"
        )
    mask = kept_mask(a["num_input_channels"], a["reverse_mask"], a.get("mask"))
    RationalQuadraticCoupling.__init__(layer, mask=mask, init_identity=a["init_identity"], **_native_arguments(a))


def _autoregressive(layer: RationalQuadraticAutoregressive, a: dict[str, Any]) -> None:
    """Build ``layer`` from normflows' autoregressive spline arguments ``a``: ``permute_mask`` draws a
    random autoregressive order; ``init_identity=False`` gives the MADE's output layer a random start."""
    native = _native_arguments(a)
    order = _autoregressive_order(a["num_input_channels"], a["permute_mask"])
    RationalQuadraticAutoregressive.__init__(layer, order=order, **native)
    if not a["init_identity"]:
        layer.made.output.reset_parameters()


class CoupledRationalQuadraticSpline(RationalQuadraticCoupling):
    """normflows' ``CoupledRationalQuadraticSpline``: flowforge's
    :class:`~flowforge.flows.RationalQuadraticCoupling` with normflows' arguments and mask convention
    (:func:`kept_mask`). Only linear tails: circular coordinates are
    :class:`CircularCoupledRationalQuadraticSpline`'s."""

    __init__ = _spline_init(
        _coupling, "num_context_channels num_bins tails tail_bound activation dropout_probability reverse_mask "
        "init_identity"
    )  # fmt: skip


class CircularCoupledRationalQuadraticSpline(RationalQuadraticCoupling):
    """normflows' ``CircularCoupledRationalQuadraticSpline``: flowforge's
    :class:`~flowforge.flows.RationalQuadraticCoupling` with the coordinates ``ind_circ`` on the circle
    ``[−tail_bound, tail_bound)`` (``circular=ind_circ``), normflows' arguments and its mask convention
    (:func:`kept_mask`)."""

    __init__ = _spline_init(
        _coupling, "ind_circ num_context_channels num_bins tail_bound activation dropout_probability reverse_mask "
        "mask init_identity"
    )  # fmt: skip


class AutoregressiveRationalQuadraticSpline(RationalQuadraticAutoregressive):
    """normflows' ``AutoregressiveRationalQuadraticSpline``: flowforge's
    :class:`~flowforge.flows.RationalQuadraticAutoregressive` with normflows' arguments; ``permute_mask``
    draws a random autoregressive order; ``init_identity=False`` gives the MADE's output layer a random start."""

    __init__ = _spline_init(
        _autoregressive, "num_context_channels num_bins tail_bound activation dropout_probability permute_mask "
        "init_identity"
    )  # fmt: skip


class CircularAutoregressiveRationalQuadraticSpline(RationalQuadraticAutoregressive):
    """normflows' ``CircularAutoregressiveRationalQuadraticSpline``:
    flowforge's :class:`~flowforge.flows.RationalQuadraticAutoregressive` with the coordinates ``ind_circ``
    on the circle ``[−tail_bound, tail_bound)`` (``circular=ind_circ``) and normflows' arguments, as
    :class:`AutoregressiveRationalQuadraticSpline` but with ``permute_mask=True`` by default."""

    __init__ = _spline_init(
        _autoregressive, "ind_circ num_context_channels num_bins tail_bound activation dropout_probability "
        "permute_mask init_identity", permute_mask=True
    )  # fmt: skip


__all__ = [
    "AutoregressiveRationalQuadraticSpline",
    "CircularAutoregressiveRationalQuadraticSpline",
    "CircularCoupledRationalQuadraticSpline",
    "CoupledRationalQuadraticSpline",
    "kept_mask",
]
