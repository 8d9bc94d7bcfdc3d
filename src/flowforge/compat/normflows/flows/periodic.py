"""normflows' ``nf.flows.periodic`` path: ``PeriodicWrap`` and ``PeriodicShift`` (flowforge's layers,
which also take normflows' single index ``ind=0``). ``bound`` and ``shift`` given as tensors are
buffers under normflows' names."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ....flows.base import Flow
from ....flows.bounded import PeriodicShift as NativePeriodicShift
from ....flows.bounded import PeriodicWrap as NativePeriodicWrap

__all__ = ["Flow", "PeriodicShift", "PeriodicWrap"]


def _indices(ind: int | Iterable[int]) -> Iterable[int]:
    if isinstance(ind, bool) or not isinstance(ind, int | Iterable):
        raise TypeError(f"ind must be an int or an iterable of ints, got {type(ind).__name__}")
    return [ind] if isinstance(ind, int) else ind


class PeriodicWrap(NativePeriodicWrap):
    """normflows' ``PeriodicWrap(ind, bound=1.0)``: ``forward`` is the identity, ``inverse`` wraps the
    coordinates ``ind`` (an int or several) into ``[−bound, bound)``; ``log|det| = 0``."""

    def __init__(self, ind: int | Iterable[int], bound: float | torch.Tensor = 1.0):
        super().__init__(_indices(ind), bound)


class PeriodicShift(NativePeriodicShift):
    """normflows' ``PeriodicShift(ind, bound=1.0, shift=0.0)``: ``x = wrap(z + shift)`` on the
    coordinates ``ind`` (an int or several), wrapped into ``[−bound, bound)``; volume preserving."""

    def __init__(self, ind: int | Iterable[int], bound: float | torch.Tensor = 1.0, shift: float | torch.Tensor = 0.0):
        super().__init__(_indices(ind), bound, shift)
