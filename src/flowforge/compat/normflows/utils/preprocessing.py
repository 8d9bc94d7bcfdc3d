"""normflows' ``nf.utils.preprocessing``: callables for image data pipelines (not flows: no log-det)."""

from __future__ import annotations

import torch


class Logit:
    r"""``x ↦ logit(α + (1 − α) x)``, ``logit(p) = log(p/(1 − p))``; :meth:`inverse` undoes it."""

    def __init__(self, alpha: float = 0):
        self.alpha = alpha

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.alpha + (1 - self.alpha) * x
        return torch.log(p / (1 - p))

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(x) - self.alpha) / (1 - self.alpha)


class Jitter:
    """Dequantisation: ``x + u``, ``u ~ U(0, scale)`` elementwise (default one grey level of 256)."""

    def __init__(self, scale: float = 1.0 / 256):
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x) * self.scale


class Scale:
    """``x ↦ scale · x`` (default 255/256, mapping jittered 8-bit images into ``[0, 1)``)."""

    def __init__(self, scale: float = 255.0 / 256.0):
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


__all__ = ["Jitter", "Logit", "Scale"]
