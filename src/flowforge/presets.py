"""One-line model constructors, each returning a :class:`~flowforge.NormalizingFlow`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .core import NormalizingFlow
from .distributions.base import BaseDistribution, DiagGaussian
from .flows import Planar, Radial


def _check(dim: int, layers: int) -> None:
    if dim < 1 or layers < 1:
        raise ValueError(f"dim and layers must be positive, got dim={dim}, layers={layers}")


def PlanarFlow(
    dim: int, layers: int, p: nn.Module | None = None, q0: BaseDistribution | None = None, act: str = "tanh"
) -> NormalizingFlow:  # noqa: N802
    """``layers`` :class:`~flowforge.flows.Planar` layers on a trainable diagonal Gaussian."""
    _check(dim, layers)
    return NormalizingFlow(q0 or DiagGaussian(dim), [Planar((dim,), act=act) for _ in range(layers)], p)


def RadialFlow(
    dim: int, layers: int, p: nn.Module | None = None, q0: BaseDistribution | None = None
) -> NormalizingFlow:  # noqa: N802
    """``layers`` :class:`~flowforge.flows.Radial` layers on a trainable diagonal Gaussian."""
    _check(dim, layers)
    return NormalizingFlow(q0 or DiagGaussian(dim), [Radial((dim,)) for _ in range(layers)], p)


PRESETS: dict[str, Callable[..., NormalizingFlow]] = {"planar": PlanarFlow, "radial": RadialFlow}
"""Presets by the names the command line uses; each is called as ``preset(dim, layers, p=target)``."""
