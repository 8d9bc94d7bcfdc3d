"""normflows' ``nf.nets``: its conditioner networks and module paths on flowforge's."""

from . import cnn, lipschitz, made, mlp, resnet
from .cnn import ConvNet2d
from .lipschitz import LipschitzMLP
from .made import MADE
from .mlp import MLP
from .resnet import ResidualNet

__all__ = ["MADE", "MLP", "ConvNet2d", "LipschitzMLP", "ResidualNet", "cnn", "lipschitz", "made", "mlp", "resnet"]
