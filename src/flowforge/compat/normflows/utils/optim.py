"""normflows' ``nf.utils.optim``: ``update_lipschitz``, ``set_requires_grad``, ``clear_grad``."""

from __future__ import annotations

from torch import nn

from ....nets import update_lipschitz as native_update_lipschitz
from ..nets.lipschitz import InducedNormConv2d, InducedNormLinear


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Set ``requires_grad`` of every parameter of ``module`` to ``flag``."""
    for parameter in module.parameters():
        parameter.requires_grad = flag


def clear_grad(model: nn.Module) -> None:
    """Set every parameter's gradient to None (cheaper than zeroing it)."""
    for parameter in model.parameters():
        parameter.grad = None


def update_lipschitz(model: nn.Module, n_iterations: int | None) -> None:
    """Advance the power iterations of every Lipschitz layer of ``model``: normflows'
    :class:`InducedNormLinear`/:class:`InducedNormConv2d` (``compute_weight(update=True,
    n_iterations=...)``) and flowforge's native spectral-norm layers
    (:func:`flowforge.nets.update_lipschitz`)."""
    for module in model.modules():
        if isinstance(module, InducedNormConv2d | InducedNormLinear):
            module.compute_weight(update=True, n_iterations=n_iterations)
    native_update_lipschitz(model, n_iterations)


__all__ = ["clear_grad", "set_requires_grad", "update_lipschitz"]
