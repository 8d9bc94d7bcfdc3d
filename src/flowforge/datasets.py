"""Built-in toy data sets (2-D samples as float tensors), reproducible from a seed."""

from __future__ import annotations

import math

import torch


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


def two_moons(num_samples: int, noise: float = 0.1, seed: int | None = None) -> torch.Tensor:
    """Two interleaving half circles (the usual "two moons" data), with Gaussian noise of std ``noise``.

    The upper moon is the half circle of radius 1 around (0, 0), the lower one around (1, 0.5)
    turned upside down; the moons are centred and scaled by 2 so they fill about [−3, 3]².
    """
    if num_samples < 1 or noise < 0:
        raise ValueError(f"need num_samples >= 1 and noise >= 0, got {num_samples}, {noise}")
    generator = _generator(seed)
    upper = torch.rand(num_samples, generator=generator) < 0.5
    angle = math.pi * torch.rand(num_samples, generator=generator)
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x - 0.5, y - 0.25], 1) * 2
    return points + noise * torch.randn(num_samples, 2, generator=generator)


def eight_gaussians(num_samples: int, radius: float = 2.0, scale: float = 0.2, seed: int | None = None) -> torch.Tensor:
    """Equal mixture of 8 isotropic Gaussians (std ``scale``) evenly spaced on a circle of ``radius``."""
    if num_samples < 1 or radius <= 0 or scale <= 0:
        raise ValueError(f"need num_samples >= 1 and positive radius and scale, got {num_samples}, {radius}, {scale}")
    generator = _generator(seed)
    angle = 2 * math.pi / 8 * torch.randint(0, 8, (num_samples,), generator=generator)
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + scale * torch.randn(num_samples, 2, generator=generator)


TOY_DATA = {"two-moons": two_moons, "8-gaussians": eight_gaussians}
