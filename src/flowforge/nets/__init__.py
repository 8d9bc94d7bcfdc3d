"""Conditioner networks: ``nf.nets.MLP``, ``nf.nets.MADE``, ``nf.nets.ResidualNet``, ``nf.nets.ConvNet2d``."""

from .conv import ConvNet2d
from .lipschitz import LipschitzMLP, LipSwish, SpectralNormLinear
from .made import MADE, MaskedLinear
from .mlp import MLP
from .residual import ResidualNet

__all__ = ["ConvNet2d", "LipSwish", "LipschitzMLP", "SpectralNormLinear", "MADE", "MLP", "MaskedLinear", "ResidualNet"]
