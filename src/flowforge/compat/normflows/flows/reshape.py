"""normflows' ``nf.flows.reshape`` path: ``Split``, ``Merge`` and ``Squeeze`` are flowforge's layers
(same modes, same arguments, no parameters)."""

from ....flows.base import Flow
from ....flows.reshape import Merge, Split, Squeeze

__all__ = ["Flow", "Merge", "Split", "Squeeze"]
