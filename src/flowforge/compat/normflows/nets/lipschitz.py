"""normflows' ``nf.nets.lipschitz`` path."""

from ....nets.lipschitz import LipschitzMLP

__all__ = ["LipschitzMLP"]
