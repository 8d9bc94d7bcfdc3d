"""normflows' ``nf.nets.resnet`` path."""

from ....nets.residual import ResidualNet

__all__ = ["ResidualNet"]
