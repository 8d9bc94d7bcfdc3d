"""normflows' ``nf.utils.masks``: binary masks (1: transformed, in normflows' couplings), dtype uint8."""

from __future__ import annotations

import torch


def create_alternating_binary_mask(features: int, even: bool = True) -> torch.Tensor:
    """``[1, 0, 1, …]`` (``even``) or ``[0, 1, 0, …]``, of dtype uint8."""
    mask = torch.zeros(features, dtype=torch.uint8)
    mask[0 if even else 1 :: 2] = 1
    return mask


def create_mid_split_binary_mask(features: int) -> torch.Tensor:
    """Ones on the first ``⌈features/2⌉`` entries, zeros after, of dtype uint8."""
    mask = torch.zeros(features, dtype=torch.uint8)
    mask[: (features + 1) // 2] = 1
    return mask


def create_random_binary_mask(features: int, seed: int | None = None) -> torch.Tensor:
    """Ones on ``⌈features/2⌉`` entries drawn without replacement (by ``torch.multinomial`` with a
    generator seeded with ``seed`` when given, so normflows' seeds give normflows' masks)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    chosen = torch.multinomial(torch.ones(features), (features + 1) // 2, replacement=False, generator=generator)
    mask = torch.zeros(features, dtype=torch.uint8)
    mask[chosen] = 1
    return mask


__all__ = ["create_alternating_binary_mask", "create_mid_split_binary_mask", "create_random_binary_mask"]
