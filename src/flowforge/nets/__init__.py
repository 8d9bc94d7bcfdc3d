"""Conditioner networks: ``nf.nets.MLP``, ``nf.nets.MADE``, ``nf.nets.ResidualNet``, ``nf.nets.ConvNet2d``,
and the Lipschitz-bounded nets of residual flows with :func:`update_lipschitz`."""

from torch import nn

from ..utils.deprecation import normflows_bridge
from .conv import ConvNet2d
from .lipschitz import LipschitzMLP, LipSwish, SpectralNormLinear
from .made import MADE, MaskedLinear
from .mlp import MLP
from .residual import ResidualNet

_normflows_names, __getattr__ = normflows_bridge(__name__)


def update_lipschitz(model: nn.Module, n_iterations: int | None = None) -> None:
    """Advance the spectral-norm power iterations of every Lipschitz layer in ``model``
    (``n_iterations`` each, or each layer's own count)."""
    for module in model.modules():
        if isinstance(module, SpectralNormLinear):
            module.update_norm(n_iterations)


__all__ = [
    "ConvNet2d",
    "LipSwish",
    "LipschitzMLP",
    "MADE",
    "MLP",
    "MaskedLinear",
    "ResidualNet",
    "SpectralNormLinear",
    "update_lipschitz",
]
