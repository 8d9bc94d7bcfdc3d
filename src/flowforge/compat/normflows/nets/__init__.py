"""normflows' ``nf.nets``: its conditioner networks and module paths."""

from . import cnn, lipschitz, made, mlp, resnet
from .cnn import ConvNet2d
from .lipschitz import InducedNormConv2d, InducedNormLinear, LipschitzCNN, LipschitzMLP
from .made import MADE
from .mlp import MLP
from .resnet import ConvResidualNet, ResidualNet

__all__ = [
    "MADE",
    "MLP",
    "ConvNet2d",
    "ConvResidualNet",
    "InducedNormConv2d",
    "InducedNormLinear",
    "LipschitzCNN",
    "LipschitzMLP",
    "ResidualNet",
    "cnn",
    "lipschitz",
    "made",
    "mlp",
    "resnet",
]
