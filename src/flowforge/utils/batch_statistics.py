"""Batch statistics that can span several processes: :func:`batch_moments` is what
:class:`~flowforge.flows.ActNorm`'s initialisation and :class:`~flowforge.flows.BatchNorm` compute their
mean and variance with; inside :func:`synchronized` (a distributed fit, :mod:`flowforge.training.distributed`)
they are those of the global batch, with gradients through the reduction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

_GROUP: list[Any] = []
"""The process groups of the active :func:`synchronized` blocks (innermost last)."""


@contextmanager
def synchronized(group: Any, enabled: bool = True) -> Iterator[None]:
    """While active, :func:`batch_moments` reduces over the processes of ``group`` (a
    ``torch.distributed`` process group; ``None``: the default group); nothing when not ``enabled``."""
    if not enabled:
        yield
        return
    _GROUP.append(group)
    try:
        yield
    finally:
        _GROUP.pop()


class _SumOverProcesses(torch.autograd.Function):
    """The sum of a tensor over the processes of a group; its gradient is the sum of the processes'
    gradients (every process's value enters every process's result)."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, group: Any) -> torch.Tensor:
        import torch.distributed as dist

        ctx.group = group
        total = value.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        import torch.distributed as dist

        total = grad.clone()
        dist.all_reduce(total, group=ctx.group)
        return total, None


def _sum_over_processes(value: torch.Tensor, group: Any) -> torch.Tensor:
    return _SumOverProcesses.apply(value, group)


@contextmanager
def local() -> Iterator[None]:
    """Inside a :func:`synchronized` block, statistics of this process's batch alone: for work that only
    some processes do (the callbacks that process 0 runs), which must not start a reduction the others
    never join."""
    _GROUP.append(_LOCAL)
    try:
        yield
    finally:
        _GROUP.pop()


_LOCAL = object()
"""The marker :func:`local` pushes: no reduction."""


def _group() -> Any:
    """The group the statistics reduce over, or :data:`_LOCAL` when they do not."""
    return _GROUP[-1] if _GROUP else _LOCAL


def synchronizing() -> bool:
    """Whether a :func:`synchronized` block is active (and no :func:`local` block inside it)."""
    return _group() is not _LOCAL


def batch_rows(values: torch.Tensor) -> int:
    """The rows of the batch ``values`` (its first dimension): over every process inside :func:`synchronized`,
    where a process may hold few rows or none."""
    group = _group()
    if group is _LOCAL:
        return values.shape[0]
    return int(_sum_over_processes(values.new_tensor(float(values.shape[0])), group).item())


def batch_moments(values: torch.Tensor, dims: Sequence[int], unbiased: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``values`` over ``dims`` (kept as size 1); ``unbiased`` divides by ``n − 1``.

    Inside :func:`synchronized`, over the global batch: two passes (the sum, then the squared deviations
    from the global mean), each summed over the processes."""
    dims = list(dims)
    group = _group()
    if group is _LOCAL:
        return values.mean(dim=dims, keepdim=True), values.var(dim=dims, keepdim=True, unbiased=unbiased)
    total = values.sum(dim=dims, keepdim=True)
    count = _sum_over_processes(values.new_tensor(float(values.numel() // total.numel())), group)
    mean = _sum_over_processes(total, group) / count
    squares = _sum_over_processes((values - mean).square().sum(dim=dims, keepdim=True), group)
    return mean, squares / (count - 1 if unbiased else count)
