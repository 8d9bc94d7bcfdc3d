"""Helpers shared by the normflows parity tests (tests/test_compat_*_parity.py)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch
from torch import nn


def perturb(module: nn.Module, seed: int, scale: float) -> None:
    """Move every floating parameter away from its initial value, so the comparison is not of zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.is_floating_point():
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                parameter.add_(scale * noise.to(parameter.dtype))


def both(
    build: Callable[[ModuleType], nn.Module], theirs_package: ModuleType, ours_package: ModuleType,
    seed: int, scale: float,
) -> tuple[nn.Module, nn.Module]:  # fmt: skip
    """``build(package)`` for normflows and for the compat package, in float64, with different weights."""
    torch.manual_seed(seed)
    theirs = build(theirs_package).double()
    torch.manual_seed(seed + 1)
    ours = build(ours_package).double()
    perturb(theirs, 10 + seed, scale)
    perturb(ours, 20 + seed, scale)
    return theirs, ours


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}
