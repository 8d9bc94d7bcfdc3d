"""Conditioner networks: ``nf.nets.MLP``, ``nf.nets.MADE``, ``nf.nets.ResidualNet``."""

from .made import MADE, MaskedLinear
from .mlp import MLP
from .residual import ResidualNet

__all__ = ["MADE", "MLP", "MaskedLinear", "ResidualNet"]
