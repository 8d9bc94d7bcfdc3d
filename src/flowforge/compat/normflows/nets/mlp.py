"""normflows' ``nf.nets.mlp`` path."""

from ....nets.mlp import MLP

__all__ = ["MLP"]
