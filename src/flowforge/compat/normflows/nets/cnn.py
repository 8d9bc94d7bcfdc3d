"""normflows' ``nf.nets.cnn`` path."""

from ....nets.conv import ConvNet2d

__all__ = ["ConvNet2d"]
