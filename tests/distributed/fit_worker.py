"""Fits that tests/test_distributed.py runs in one process and under ``torchrun`` with several.

    python tests/distributed/fit_worker.py OUT KIND [KIND ...]
    python tests/distributed/fit_worker.py OUT KIND [KIND ...] --group-of-one file:///tmp/rendezvous

``WORKER_DEVICE=cuda`` runs them on CUDA (one GPU per process, NCCL).

Kinds (float64 flows, 3 epochs):

- ``plain``: ActNorm, affine couplings and a BatchNorm on 150 rows in batches of 32 (a last batch of 22);
- ``conditional``: the same with a context, on integer levels dequantised in every batch;
- ``ragged``: ActNorm and couplings on 33 rows in batches of 32 (a last batch of one row: in two
  processes one part is empty), then on 30 rows in batches of 3 (parts of 2 and 1 rows);
- ``signal``: process 1 (or the only process) sends itself SIGTERM during the first validation;
- ``resume``: ``plain`` with a checkpoint in the working folder, stopped by SIGTERM to process 1 (or the
  only process) in the 7th batch (mid-epoch 2), then resumed from the checkpoint into a new model;
- ``fail``: process 1 is given no data, which its fit refuses;
- ``mapped``: ``plain`` with the training and validation rows read a batch at a time from one ``.npy``
  file in the working folder (``shared.npy``, read by every process);
- ``reverse``: :func:`fit` by reverse KL (annealed) to TwoModes, 6 steps of 11 samples split across the
  processes (parts of 6 and 5), each process drawing with its own stream; :func:`simulate_reverse`
  computes the same in one process;
- ``reverse-resume``: ``reverse`` with a checkpoint every 2 steps and a counting callback in process 0
  (as the command's frames), stopped by SIGTERM to the last process in step 4, and resumed from the
  checkpoint into a new model;
- ``callback``: ``reverse`` with a BatchNorm layer and a callback in process 0 that evaluates the model
  (whose batch statistics must then be process 0's alone).

Process 0 (or the only process) saves ``{kind: {"state", "train", "validation"}}`` to OUT; for ``signal``
the number of the signal that stopped it and the epochs done.
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

import numpy
import torch

import flowforge as nf
from flowforge import flows
from flowforge.streaming import LazyRows
from flowforge.training import Every, TrainingInterrupted, fit, fit_data

KINDS = (
    "plain", "conditional", "ragged", "signal", "resume", "fail", "mapped", "reverse", "reverse-resume", "callback",
)  # fmt: skip
DEVICE = os.environ.get("WORKER_DEVICE", "cpu")
"""Where the fits run: ``cpu``, or ``cuda`` (one GPU per process) for a check on a GPU machine."""
REVERSE = {"iterations": 6, "samples_per_step": 11, "anneal_iters": 4, "seed": 5}


def model(context: int | None = None, batch_norm: bool = True) -> nf.NormalizingFlow:
    torch.manual_seed(int(os.environ.get("RANK", "0")))  # different in each process: DDP must align them
    layers: list[flows.Flow] = [flows.ActNorm(2)]
    for index in range(4):
        mask = flows.alternating_mask(2, even=index % 2 == 0)
        layers.append(flows.RealNVPCoupling(2, 16, mask, context_features=context, init_identity=False))
        layers.append(flows.BatchNorm(2) if batch_norm and index == 1 else flows.ActNorm(2))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2), layers).double()


def _fit(flow: nf.NormalizingFlow, rows: int, batch_size: int, **kwargs: Any) -> dict[str, torch.Tensor]:
    data = kwargs.pop("data", nf.datasets.two_moons(rows, seed=0).double())
    validation = kwargs.pop("validation", nf.datasets.two_moons(40, seed=1).double())
    result = fit_data(flow, data, validation, epochs=3, batch_size=batch_size, lr=3e-3, seed=5, progress=False,
                      device=DEVICE, **kwargs)  # fmt: skip
    numbers = {"train": torch.tensor(result.train_nll), "validation": torch.tensor(result.validation_nll)}
    return {"state": flow.state_dict(), **numbers}  # type: ignore[dict-item]


SHARED = "shared.npy"
"""The table of the ``mapped`` kind, in the working folder."""


def write_shared(path: str) -> None:
    """The 190 rows (150 to train on, 40 to validate on) of the ``mapped`` kind."""
    numpy.save(path, torch.cat([nf.datasets.two_moons(150, seed=0), nf.datasets.two_moons(40, seed=1)]).double())


class Counter:
    """A callback that counts its calls and keeps the count in a training state."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, iteration: int, model: Any) -> None:
        self.calls += 1

    def state_dict(self) -> dict[str, int]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.calls = state["calls"]


def reverse_model(batch_norm: bool = False) -> nf.NormalizingFlow:
    torch.manual_seed(int(os.environ.get("RANK", "0")))  # different in each process: DDP must align them
    layers: list[flows.Flow] = []
    for index in range(3):
        mask = flows.alternating_mask(2, even=index % 2 == 0)
        layers.append(flows.RealNVPCoupling(2, 8, mask, init_identity=False))
        if batch_norm and index == 1:
            layers.append(flows.BatchNorm(2))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2), layers, p=nf.distributions.TwoModes(2.0, 0.1)).double()


def _reverse(flow: nf.NormalizingFlow, **kwargs: Any) -> dict[str, Any]:
    result = fit(flow, progress=False, device=DEVICE, compile="off", **REVERSE, **kwargs)
    return {"state": flow.state_dict(), "train": torch.tensor(result.loss_history), "validation": torch.zeros(0)}


def simulate_reverse(processes: int) -> dict[str, Any]:
    """What ``reverse`` computes in ``processes`` processes, in this one: process 0's initial weights, each
    process's part of the samples drawn from its own stream (seeded by ``process_seed``) and its share of the
    loss; the gradient of the sum of the shares, and the default Adam step."""
    from flowforge.losses import ReverseKL, annealing_beta

    environment = os.environ.pop("RANK", None)
    flow = reverse_model()
    if environment is not None:
        os.environ["RANK"] = environment
    total = REVERSE["samples_per_step"]
    parts = [nf.training.distributed.World(rank, processes, rank).part_size(total) for rank in range(processes)]
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
    streams = []
    for rank in range(processes):
        torch.manual_seed(nf.training.distributed.process_seed(REVERSE["seed"], rank))
        streams.append(torch.get_rng_state())
    history = []
    for it in range(REVERSE["iterations"]):
        optimizer.zero_grad(set_to_none=True)
        beta, summed = annealing_beta(it, REVERSE["anneal_iters"]), 0.0
        for rank, part in enumerate(parts):
            torch.set_rng_state(streams[rank])
            share = ReverseKL(part)(flow, torch.tensor(beta, dtype=torch.float64)) * (part / total)
            share.backward()
            streams[rank] = torch.get_rng_state()
            summed += float(share.detach())
        optimizer.step()
        history.append(summed)
    return {
        "state": flow.state_dict(),
        "train": torch.tensor(history, dtype=torch.float64),
        "validation": torch.zeros(0),
    }


def run(kind: str) -> dict[str, Any]:
    """The fit of ``kind``; what process 0 saves of it."""
    rank = int(os.environ.get("RANK", "0"))
    if kind == "plain":
        return _fit(model(), 150, 32)
    if kind == "conditional":
        data = (nf.datasets.two_moons(150, seed=0).double() * 4 + 16).round().clamp(0, 31)
        validation = (nf.datasets.two_moons(40, seed=1).double() * 4 + 16).round().clamp(0, 31)
        contexts = [torch.randn(n, 3, generator=torch.Generator().manual_seed(n)).double() for n in (150, 40)]
        return _fit(
            model(context=3), 150, 32, data=data, validation=validation, levels=32, train_context=contexts[0],
            validation_context=contexts[1],
        )  # fmt: skip
    if kind == "ragged":
        first = _fit(model(batch_norm=False), 33, 32)
        second = _fit(model(batch_norm=False), 30, 3)
        return {"state": {**first["state"], **{f"second.{k}": v for k, v in second["state"].items()}},
                "train": torch.cat([first["train"], second["train"]]),
                "validation": torch.cat([first["validation"], second["validation"]])}  # fmt: skip
    if kind == "signal":
        flow = model()
        log_prob = flow.log_prob

        def signalling_log_prob(x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
            if not flow.training and rank == int(os.environ.get("WORLD_SIZE", "1")) - 1:
                os.kill(os.getpid(), signal.SIGTERM)  # held until the loop's next reduction
            return log_prob(x, context)

        flow.log_prob = signalling_log_prob  # type: ignore[method-assign]
        try:
            _fit(flow, 150, 32)
        except TrainingInterrupted as stop:
            return {"signal": stop.signal_number, "epochs": len(stop.result.train_nll)}  # type: ignore[union-attr]
        return {"signal": None}
    if kind == "resume":
        flow, calls = model(), [0]
        log_prob = flow.log_prob

        def interrupting_log_prob(x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
            calls[0] += flow.training
            if calls[0] == 7 and flow.training and rank == int(os.environ.get("WORLD_SIZE", "1")) - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return log_prob(x, context)

        flow.log_prob = interrupting_log_prob  # type: ignore[method-assign]
        try:
            _fit(flow, 150, 32, checkpoint="resume.pt")
        except TrainingInterrupted as stop:
            assert stop.signal_number == signal.SIGTERM and len(stop.result.train_nll) == 1  # type: ignore[union-attr]
        else:
            raise AssertionError("the fit was not interrupted")
        return _fit(model(), 150, 32, checkpoint="resume.pt", resume="resume.pt")
    if kind == "reverse":
        return _reverse(reverse_model())
    if kind == "reverse-resume":
        flow, calls = reverse_model(), [0]
        target_log_prob = flow.p.log_prob

        def interrupting_log_prob(x: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            if calls[0] == 4 and rank == int(os.environ.get("WORLD_SIZE", "1")) - 1:
                os.kill(os.getpid(), signal.SIGTERM)  # held until the step's reduction
            return target_log_prob(x)

        flow.p.log_prob = interrupting_log_prob  # type: ignore[method-assign]
        counted = Counter()  # process 0 runs the callbacks (as the command's frames), the others have none
        try:
            _reverse(
                flow, checkpoint="reverse.pt", checkpoint_every=2, callbacks=[Every(1, counted)] if rank == 0 else []
            )
        except TrainingInterrupted as stop:
            assert stop.signal_number == signal.SIGTERM and stop.result.iterations == 4  # type: ignore[union-attr]
        else:
            raise AssertionError("the fit was not interrupted")
        again = Counter()
        resumed = _reverse(
            reverse_model(), checkpoint="reverse.pt", checkpoint_every=2, resume="reverse.pt",
            callbacks=[Every(1, again)] if rank == 0 else [],
        )  # fmt: skip
        assert rank != 0 or again.calls == REVERSE["iterations"]  # 4 restored from the checkpoint, 2 more
        return resumed
    if kind == "mapped":  # every process reads the same file (written by the caller, or here when missing)
        if not os.path.exists(SHARED):
            write_shared(SHARED)
        rows = LazyRows.open(SHARED)
        return _fit(model(), 150, 32, data=rows.subset(range(150)), validation=rows.subset(range(150, 190)))
    if kind == "callback":  # process 0's callback evaluates a model with BatchNorm: no reduction of its own
        flow = reverse_model(batch_norm=True)
        probe = torch.zeros(3, 2, dtype=torch.float64, device=DEVICE)
        callbacks = [Every(2, lambda _, m: m.log_prob(probe))] if rank == 0 else []
        return _reverse(flow, callbacks=callbacks)
    assert kind == "fail"
    data = nf.datasets.two_moons(150, seed=0).double()
    return _fit(model(), 150, 32, data=data[:0] if rank == 1 else data)


def group_of_one(kinds: list[str], rendezvous: str) -> dict[str, Any]:
    """Each kind in this one process, then again inside a process group of one that this process creates
    (gloo, or NCCL on CUDA): the distributed path with one process, ``{"alone": ..., "group": ...}``."""
    import torch.distributed as dist

    alone = {kind: run(kind) for kind in kinds}
    dist.init_process_group("nccl" if DEVICE == "cuda" else "gloo", init_method=rendezvous, rank=0, world_size=1)
    try:
        grouped = {kind: run(kind) for kind in kinds}
    finally:
        dist.destroy_process_group()
    return {"alone": alone, "group": grouped}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("kinds", nargs="+", choices=KINDS)
    parser.add_argument("--group-of-one", metavar="URL", help="run group_of_one with this rendezvous (file://...)")
    args = parser.parse_args()
    if args.group_of_one:
        torch.save(group_of_one(args.kinds, args.group_of_one), args.out)
        return
    results = {kind: run(kind) for kind in args.kinds}
    if os.environ.get("RANK", "0") == "0":
        torch.save(results, args.out)


if __name__ == "__main__":
    main()
