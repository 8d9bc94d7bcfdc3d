"""Training one model in several processes with ``torch.distributed`` (launched by ``torchrun``).

:func:`fit` (reverse or forward KL by steps) splits the samples of every step across the processes:
each draws its part of ``samples_per_step`` with its own random stream and computes its share of the
step's mean loss, and ``DistributedDataParallel`` sums the shares' gradients, so a step of ``N``
processes is a step of one process on ``samples_per_step`` samples.

:func:`fit_data` trains data-parallel when it runs in a process group of more than one process: one
started by ``torchrun`` (which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous address;
:func:`join` then creates the group: gloo on the CPU, NCCL on CUDA with one device per local rank) or
one the caller created. Every process holds the same data and draws the same shuffled order; each
global batch of ``batch_size`` rows is cut into one contiguous part per process, the gradients are
averaged by PyTorch's ``DistributedDataParallel``, weighted so that the step equals one process's step on
the whole batch. Layers whose statistics span the batch (:class:`~flowforge.flows.ActNorm`'s
initialisation, :class:`~flowforge.flows.BatchNorm`) take them over the global batch through
:func:`~flowforge.utils.batch_statistics.batch_moments` inside
:func:`~flowforge.utils.batch_statistics.synchronized`, with gradients through the reduction. So
``N`` processes at global batch ``B`` give the model one process gives at batch ``B``, up to the
rounding of the reductions (held to 1e-6 in float64 by the tests). Training losses, validation scores,
early stopping and the restore of the best weights therefore agree across processes; only process 0
writes checkpoints and shows a progress bar.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import set_rng_states
from .interrupt import DeferredSignals


@dataclass(frozen=True)
class World:
    """This process's place in a distributed run."""

    rank: int
    size: int
    local_rank: int
    device: torch.device = torch.device("cpu")
    """this process's device, where the reductions' tensors live"""
    group: dist.ProcessGroup | None = None
    """a second group over the same processes for the batch statistics, so that their reductions never
    interleave with the gradients' (``None``: the default group)"""

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes files and prints."""
        return self.rank == 0

    def part_size(self, rows: int) -> int:
        """The number of rows of this process's part of ``rows``."""
        part = self.part(rows)
        return part.stop - part.start

    def part(self, rows: int) -> slice:
        """This process's contiguous part of a global batch of ``rows`` rows (parts differ by at most one)."""
        base, extra = divmod(rows, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def launched() -> bool:
    """Whether the fits train across processes: the caller has initialised a process group (of any size:
    a group of one runs the distributed path, e.g. to check NCCL on one GPU), or ``torchrun``'s
    ``WORLD_SIZE`` says more than one process."""
    if dist.is_available() and dist.is_initialized():
        return True
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def single_process(name: str) -> None:
    """RuntimeError in one of several processes: the fit ``name`` would train independent copies."""
    if launched():
        raise RuntimeError(
            f"{name} trains in one process, but this is one of several (torchrun): only fit_data and fit train "
            f"across processes so far; run {name} without torchrun"
        )


def _local_rank() -> int:
    """torchrun's ``LOCAL_RANK``; in a group made without it, the rank modulo the visible CUDA devices."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    if dist.is_available() and dist.is_initialized() and torch.cuda.is_available():
        return dist.get_rank() % torch.cuda.device_count()
    return 0


def local_device(device: str | torch.device | None) -> torch.device:
    """The device of this process: CUDA device ``LOCAL_RANK`` for ``"cuda"`` without an index, and for
    None when CUDA is available; the CPU for None otherwise; any other ``device`` as given (an explicit
    ``cuda:N`` puts every process on that one device, which NCCL refuses)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", _local_rank())
        if chosen.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"this process (local rank {chosen.index}) needs {chosen} but {torch.cuda.device_count()} CUDA "
                "device(s) are visible: start at most one process per GPU (torchrun --nproc-per-node), or train on "
                "the CPU"
            )
    return chosen


def join(device: torch.device) -> World | None:
    """This process's :class:`World`, creating the default process group from ``torchrun``'s environment
    when none exists (NCCL for a CUDA ``device``, gloo otherwise); None in a single process."""
    if not launched():
        return None
    if not dist.is_available():  # pragma: no cover - builds without torch.distributed
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: launch with torchrun "
                "(torchrun --nproc-per-node N ...) or create the process group before training"
            )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":  # also in a group the caller made: NCCL's object gathers use the current device
        torch.cuda.set_device(device)
    global _STATISTICS_GROUP
    if _STATISTICS_GROUP is None or _STATISTICS_GROUP[0] is not dist.group.WORLD:  # one per default group
        _STATISTICS_GROUP = (dist.group.WORLD, dist.new_group(backend=dist.get_backend()))
    return World(dist.get_rank(), dist.get_world_size(), _local_rank(), device, _STATISTICS_GROUP[1])


_STATISTICS_GROUP: tuple[Any, Any] | None = None
"""The default group this process joined and the second group made over it for the batch statistics."""


class Share(nn.Module):
    """``forward(value) = objective(model, value) · weight``: a process's share of a step's loss as a module,
    so that ``DistributedDataParallel`` sees the pass (sampling included) and reduces its gradients."""

    def __init__(self, model: nn.Module, objective: Any, weight: float) -> None:
        super().__init__()
        self.model, self.objective, self.weight = model, objective, weight

    def forward(self, value: Any) -> torch.Tensor:
        return self.objective(self.model, value) * self.weight


class SummedNLL(nn.Module):
    """``forward(x, context) = −Σ log q(x | context)`` over the rows: the model's negative log-likelihood
    as a module, so that ``DistributedDataParallel`` sees the model's pass and reduces its gradients (a
    sum, not a mean, so that a process with no rows of a short last batch adds zero)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        model: Any = self.model
        return -model.log_prob(x, context).sum()


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel``, which gives every process process 0's
    parameters and buffers. Its graph is static (the same parameters take part in every pass, which also
    allows some that never do), and buffers are not sent again at every pass: the only ones that change
    in training are the synchronised batch statistics."""
    from torch.nn.parallel import DistributedDataParallel

    # torch 2.13 renamed broadcast_buffers (deprecated there) to forward_sync_buffers
    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_sync: dict[str, Any] = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
    return DistributedDataParallel(
        module, device_ids=[device] if device.type == "cuda" else None, static_graph=True, **no_sync
    )


def sum_over(value: torch.Tensor, world: World | None) -> torch.Tensor:
    """``value`` summed over the processes (in place; unchanged in a single process)."""
    if world is not None:
        dist.all_reduce(value)
    return value


def agree(loss: torch.Tensor | None, signals: DeferredSignals, world: World | None) -> tuple[torch.Tensor | None, bool]:
    """A step's loss (in a distributed run the sum of the processes' shares) and whether to stop for a
    signal. In a distributed run both come from one reduction of ``(share, holds a signal, its number)``,
    so every process takes the same decision at the same point (a signal that comes after the reduction
    waits for the next one), and a process that got no signal takes the others'."""
    if world is None:
        return loss, signals.pending is not None
    held = signals.pending
    share = 0.0 if loss is None else float(loss)
    numbers = torch.tensor([share, float(held is not None), float(held or 0)], dtype=torch.float64, device=world.device)
    total, holding, number = sum_over(numbers, world).tolist()
    stop = holding > 0
    if stop and held is None:
        signals.pending = round(number / holding)
    return (None if loss is None else loss.new_tensor(total)), stop


def process_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s random stream in a run seeded ``seed``: ``seed`` itself for process
    0 (so a group of one draws what one process draws), and for the others a seed derived from
    ``(seed, rank)`` by NumPy's ``SeedSequence``, so that the streams of one run never coincide with
    those of a run with a neighbouring seed (as ``seed + rank`` would)."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def every_rng_state(world: World | None, states: dict[str, Any]) -> dict[str, Any]:
    """This process's generator ``states`` (:func:`~flowforge.training.checkpoint.rng_states`) and, in a
    distributed run, every process's, gathered under ``"processes"``: what a training state records so
    that each process resumes its own random stream."""
    if world is None:
        return states
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, states)
    return {**states, "processes": gathered}


def restore_rng_state(world: World | None, saved: dict[str, Any]) -> None:
    """Set torch's generators to this process's state in ``saved`` (:func:`every_rng_state`); a process
    without one of its own (a state written by another number of processes) takes process 0's, moved on
    by its rank, so that the processes' streams still differ."""
    own = saved.get("processes")
    if world is not None and own is not None and len(own) == world.size:
        set_rng_states(own[world.rank])
        return
    set_rng_states(saved)
    if world is not None and world.rank > 0:
        torch.manual_seed(process_seed(int(torch.randint(2**62, (1,))), world.rank))


def check_same(world: World | None, device: torch.device, **values: float) -> None:
    """ValueError in every process unless every process holds the same ``values`` (row counts, sums of the
    data, whether a checkpoint is written and resumed from): a distributed fit needs the same data and
    settings in every process."""
    if world is None:
        return
    high = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    low = high.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    differing = [name for name, a, b in zip(values, high.tolist(), low.tolist(), strict=True) if a != b]
    if differing:
        raise ValueError(
            f"the processes hold different data or settings ({', '.join(differing)} differ): every process of a "
            "distributed fit needs the same data, which it cuts into parts itself, and the same checkpoint and "
            "resume arguments (only process 0 writes the checkpoint)"
        )


def same_seed(seed: int | None, world: World | None, device: torch.device) -> int | None:
    """``seed``, or in a distributed run without one a seed drawn by process 0 and sent to all, so that
    every process draws the same shuffles."""
    if world is None or seed is not None:
        return seed
    drawn = torch.randint(0, 2**62, (1,), device=device)
    dist.broadcast(drawn, 0)
    return int(drawn.item())


def enter(device: str | torch.device | None, seed: int | None, **same: float) -> tuple[World, torch.device, int | None]:
    """What a fit does when it trains across processes, before it trains: this process's device
    (:func:`local_device`), its :class:`World` (:func:`join`), a seed every process shares
    (:func:`same_seed`) and the check that every process holds the same ``same`` values
    (:func:`check_same`: row counts, sums of the data, settings)."""
    chosen = local_device(device)
    world = join(chosen)
    if world is None:  # pragma: no cover - the caller checked launched()
        raise RuntimeError("enter() outside a distributed run")
    seed = same_seed(seed, world, chosen)
    check_same(world, chosen, **same)
    return world, chosen, seed
