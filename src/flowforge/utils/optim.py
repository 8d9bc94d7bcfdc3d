"""Optimisation helpers (normflows' ``nf.utils.optim`` names)."""

from __future__ import annotations

from torch import nn

from ..nets.lipschitz import SpectralNormLinear


def update_lipschitz(model: nn.Module, n_iterations: int | None = None) -> None:
    """Advance the spectral-norm power iterations of every Lipschitz layer in ``model``
    (``n_iterations`` each, or each layer's own count)."""
    for module in model.modules():
        if isinstance(module, SpectralNormLinear):
            module.update_norm(n_iterations)
