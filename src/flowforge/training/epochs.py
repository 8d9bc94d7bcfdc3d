"""The epoch loop: training on a data set by shuffled mini-batches until the validation score stops
improving, used by :func:`fit_data` (maximum likelihood of a flow, forward KL) and :func:`fit_vae`
(the ELBO of a VAE with a flow posterior).

:func:`run_epochs` is the one loop: Adam, an optional learning-rate schedule, gradient clipping,
validation after every epoch, early stopping with patience, restoring the best weights,
divergence handling (a non-finite training loss restores the best weights and raises
:class:`~flowforge.training.TrainingDiverged`), training states to resume from (:class:`Checkpointing`)
and clean stops on SIGINT, SIGTERM and SIGHUP. The two fits only say how a batch's loss is computed
and how an epoch is judged (:class:`Judge`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch import nn

from ..datasets import binarize, dequantize
from ..losses import ELBO, ForwardKL
from ..metrics import FlowModel, discrete_nll_offset, mean_elbo, mean_nll
from ..nets.lipschitz import SpectralNormLinear
from ..progress import progress_bar
from ..streaming import LazyRows, Rows, all_finite, as_rows, total
from ..utils.batch_statistics import synchronized
from ..utils.checks import positive_int
from ..vae import FlowVAE
from .checkpoint import (
    StatePath,
    check_settings,
    generator_state,
    load_state,
    restore,
    restored_generator,
    rng_states,
    save_state,
)
from .common import (
    DataFitResult,
    TrainingDiverged,
    TrainingInterrupted,
    VAEFitResult,
    check_learning_rate,
    check_patience,
    on_device,
    prepare,
)
from .distributed import (
    SummedNLL,
    World,
    agree,
    data_parallel,
    enter,
    every_rng_state,
    launched,
    process_seed,
    restore_rng_state,
    single_process,
)
from .interrupt import DeferredSignals

CHECKPOINT_SECONDS = 30.0
"""With ``checkpoint_every=None`` (the default) the epoch loop writes its training state after an epoch
when this long has passed since the last write: a save (model, best weights, optimizer moments,
fsynced) can take longer than a small model's epoch, and at most this much work is lost to a crash."""
SCHEDULES = (None, "cosine", "plateau")
"""Learning-rate schedules of :func:`fit_data`: none, cosine annealing to 0, halving on a plateau."""

BatchLoss = Callable[[torch.Tensor, int], torch.Tensor]
"""``batch_loss(row_indices, step) -> mean loss of those rows``; ``step`` counts batches from 1."""
Result = TypeVar("Result", DataFitResult, VAEFitResult)


@dataclass(frozen=True)
class Judge:
    """How :func:`run_epochs` reads an epoch's numbers, and names them."""

    loss_name: str
    """what the training loss is called in the divergence message"""
    train_key: str
    validation_key: str
    digits: int
    """digits of the progress bar's numbers"""
    higher_is_better: bool = False
    """whether a larger validation score is better (the ELBO) or a smaller one (the NLL)"""
    warmup_epochs: int = 0
    """epochs at the start that do not count against the patience"""
    train_offset: float = 0.0
    """added to the mean training loss (the discrete NLL offset of dequantised levels)"""


@dataclass
class EpochHistory:
    """What :func:`run_epochs` did: the per-epoch training losses and validation scores."""

    train: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    wall_time: float = 0.0


def make_scheduler(
    schedule: str | None, optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The learning-rate schedule: ``"cosine"`` annealing to 0 over ``epochs``, ``"plateau"`` halving after
    3 epochs without improvement, or None."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    return None


@dataclass
class Checkpointing:
    """Where and how often :func:`run_epochs` writes its training state, and the state it resumes from."""

    loop: str
    """the fit that runs the loop, as recorded in the state (``"fit_data"``, ``"fit_vae"``)"""
    settings: dict[str, Any]
    """what changes the run's course, recorded in the state and checked on resume"""
    path: StatePath | None = None
    every: int | None = None
    """epochs between checkpoints; None: after the epoch that ends :data:`CHECKPOINT_SECONDS` or more
    after the last write"""
    resumed: dict[str, Any] | None = None
    """the training state to continue from (read by :func:`~flowforge.training.checkpoint.load_state`)"""
    resume_path: StatePath | None = None
    """the file it was read from"""


@dataclass
class _Position:
    """Where :func:`run_epochs` is within its run: epoch, batches done in it and the epoch's shuffled
    order, the running sum of the epoch's losses, and batches done in all."""

    epoch: int = 0
    batch: int = 0
    order: torch.Tensor | None = None
    total: torch.Tensor | None = None
    count: int = 0
    step: int = 0


def run_epochs(
    model: nn.Module,
    rows: int,
    batch_loss: BatchLoss,
    judge: Judge,
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    lipschitz_layers: Sequence[SpectralNormLinear],
    validate: Callable[[], float] | None,
    make_result: Callable[[EpochHistory], Result],
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None = None,
    clip_grad_norm: float | None = None,
    patience: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    checkpointing: Checkpointing | None = None,
    world: World | None = None,
) -> Result:
    """Train ``model`` for up to ``epochs`` epochs over ``rows`` training rows in shuffled mini-batches.

    Every batch: ``batch_loss(indices, step)``, its gradient (clipped to norm ``clip_grad_norm``), an
    optimizer step, and the Lipschitz layers' spectral-norm update. After every epoch: the mean
    training loss (a non-finite one restores the best weights and raises :class:`TrainingDiverged`),
    ``validate()`` (the best epoch's weights are kept), the scheduler, and early stopping when the
    validation score has not improved for ``patience`` epochs after the judge's warm-up. Without
    ``validate`` the last weights are kept. Returns ``make_result`` of the history.

    With ``checkpointing`` the training state is written every ``checkpointing.every`` epochs (by
    default after an epoch :data:`CHECKPOINT_SECONDS` or more after the last write), when
    the run ends, and at an interruption (after the batch during which SIGINT, SIGTERM or SIGHUP came,
    mid-epoch), and a run resumes from ``checkpointing.resumed`` (mid-epoch too, with the epoch's order
    and running totals). An interruption leaves the current weights in the checkpoint and the best
    weights so far in the model (the initial ones before the first validated epoch; the current ones
    without ``validate``), and raises :class:`TrainingInterrupted`.

    In a distributed run (``world``, :mod:`flowforge.training.distributed`) every process draws the same
    order; ``batch_loss`` returns this process's share of the global batch's mean loss (the shares sum to
    it), whose gradient, times the number of processes, ``DistributedDataParallel`` averages. The losses
    and a signal any process received are summed over the processes after every batch, so all of them
    see the same numbers and stop at the same batch; only process 0 writes checkpoints and shows the
    progress bar.
    """
    checkpointing = checkpointing or Checkpointing("run_epochs", {})
    run = _EpochRun(model, optimizer, scheduler, generator, judge, validate, make_result, checkpointing, world)
    if checkpointing.resumed is not None:
        resumed = checkpointing.resumed
        restore(lambda: run.restore(resumed), checkpointing.resume_path)
        if checkpointing.resumed["complete"]:
            return run.result()
    device = parameters[0].device
    bar = progress_bar(
        total=epochs, initial=run.at.epoch, enabled=progress and (world is None or world.is_main), unit="epoch",
        dynamic_ncols=True,
    )  # fmt: skip
    with DeferredSignals() as signals, synchronized(None if world is None else world.group, world is not None):
        try:
            while run.at.epoch < epochs:
                at = run.at
                model.train()
                if at.batch == 0:
                    at.order = torch.randperm(rows, generator=generator).to(device)
                    at.total, at.count = torch.zeros((), dtype=parameters[0].dtype, device=device), 0
                assert at.order is not None and at.total is not None
                batches = at.order.split(batch_size)
                for batch_index in batches[at.batch :]:
                    at.step += 1
                    optimizer.zero_grad(set_to_none=True)
                    loss = batch_loss(batch_index, at.step)
                    (loss if world is None else loss * world.size).backward()
                    if clip_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
                    optimizer.step()
                    for layer in lipschitz_layers:
                        layer.update_norm()
                    mean_loss, stop = agree(loss.detach(), signals, world)
                    assert mean_loss is not None
                    at.total += mean_loss * batch_index.shape[0]
                    at.count += batch_index.shape[0]
                    at.batch += 1
                    if stop and at.batch < len(batches):  # else after the epoch's end
                        raise run.interrupted(signals.act())
                postfix = run.end_epoch(patience)
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if run.history.stopped_early:
                    break
                # one reduction: whether process 0 is due to write (its clock decides) and whether to stop
                due, stop = agree(torch.tensor(float(run.checkpoint_due())), signals, world)
                if float(cast(torch.Tensor, due)) > 0 and at.epoch < epochs:
                    run.save()
                if stop:
                    raise run.interrupted(signals.act())
        finally:
            bar.close()
        run.finish()
        if agree(None, signals, world)[1]:
            raise TrainingInterrupted(signals.act(), run.result(), run.checkpoint_path)
    return run.result()


class _EpochRun:
    """A run of :func:`run_epochs` under way: its position, history and best state, which are what its
    training state records, with the model, optimizer, schedule and generators."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator | None,
        judge: Judge,
        validate: Callable[[], float] | None,
        make_result: Callable[[EpochHistory], Any],
        checkpointing: Checkpointing,
        world: World | None = None,
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.generator = model, optimizer, scheduler, generator
        self.world, self.writes = world, world is None or world.is_main
        self.judge, self.validate, self.make_result, self.checkpointing = judge, validate, make_result, checkpointing
        self.device = next(model.parameters()).device
        self.history = EpochHistory()
        self.at = _Position()
        self.best_state = copy.deepcopy(model.state_dict())
        self.best_value = -math.inf if judge.higher_is_better else math.inf
        self.start = self.saved_at = time.perf_counter()

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.checkpointing.path is None else Path(self.checkpointing.path)

    def end_epoch(self, patience: int | None) -> dict[str, str]:
        """The epoch's bookkeeping: its mean training loss (a non-finite one restores the best weights and
        raises :class:`TrainingDiverged`), validation, the schedule's step and early stopping; returns
        the progress bar's numbers."""
        judge, history, at = self.judge, self.history, self.at
        assert at.total is not None
        epoch = at.epoch
        train_value = float(at.total) / at.count + judge.train_offset
        if not math.isfinite(train_value):
            self.model.load_state_dict(self.best_state)
            raise TrainingDiverged(
                f"{judge.loss_name} became {train_value} in epoch {epoch + 1}; the best weights were restored",
                self.result(),
            )
        history.train.append(train_value)
        self.model.eval()
        postfix = {judge.train_key: f"{train_value:.{judge.digits}f}"}
        if self.validate is not None:
            value = self.validate()
            history.validation.append(value)
            improved = value > self.best_value if judge.higher_is_better else value < self.best_value
            if improved:
                self.best_value, history.best_epoch = value, epoch
                self.best_state = copy.deepcopy(self.model.state_dict())
            postfix[judge.validation_key] = f"{value:.{judge.digits}f}"
        else:
            history.best_epoch = epoch
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(history.validation[-1] if history.validation else train_value)
        elif self.scheduler is not None:
            self.scheduler.step()
        self.at = _Position(epoch=epoch + 1, step=at.step)
        # Patience counts from the end of the warm-up: a VAE's ELBO keeps falling while β still rises.
        waited = epoch - max(history.best_epoch, judge.warmup_epochs - 1)
        history.stopped_early = self.validate is not None and patience is not None and waited >= patience
        return postfix

    def state(self, complete: bool) -> dict[str, Any]:
        """What :meth:`restore` takes back."""
        at, history = self.at, self.history
        return {
            "complete": complete,
            "settings": self.checkpointing.settings,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generator": generator_state(self.generator),
            "rng": every_rng_state(self.world, rng_states(self.device)),
            "epoch": at.epoch,
            "batch": at.batch,
            "order": None if at.order is None else at.order.cpu(),
            "total": None if at.total is None else at.total.cpu(),
            "count": at.count,
            "step": at.step,
            "train": torch.tensor(history.train, dtype=torch.float64),
            "validation": torch.tensor(history.validation, dtype=torch.float64),
            "best_epoch": history.best_epoch,
            "stopped_early": history.stopped_early,
            "wall_time": time.perf_counter() - self.start,
            "best_value": self.best_value,
            "best_model": self.best_state,
        }

    def checkpoint_due(self) -> bool:
        """Whether the epoch just ended is one to write the training state after (by this process's clock:
        in a distributed run process 0's decides, :func:`run_epochs`)."""
        every = self.checkpointing.every
        if self.checkpointing.path is None or not self.writes:
            return False
        if every is None:
            return time.perf_counter() - self.saved_at >= CHECKPOINT_SECONDS
        return self.at.epoch % every == 0

    def save(self, complete: bool = False) -> None:
        """Write the training state (process 0 of a distributed run, after every process has given its
        generators' states: every process calls this at the same point)."""
        assert self.checkpointing.path is not None
        state = self.state(complete)
        if self.writes:
            save_state(self.checkpointing.path, self.checkpointing.loop, state)
        self.saved_at = time.perf_counter()

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from the training state ``saved`` (the generator is the caller's, made from it)."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.history = EpochHistory(
            saved["train"].tolist(), saved["validation"].tolist(), saved["best_epoch"], saved["stopped_early"]
        )
        self.best_value, self.best_state = saved["best_value"], saved["best_model"]
        dtype = next(self.model.parameters()).dtype
        self.at = _Position(
            saved["epoch"], saved["batch"], on_device(saved["order"], self.device, dtype),
            on_device(saved["total"], self.device, dtype), saved["count"], saved["step"],
        )  # fmt: skip
        self.start = time.perf_counter() - saved["wall_time"]
        restore_rng_state(self.world, saved["rng"])  # each process's own (dropout differs between them)

    def interrupted(self, signal_number: int) -> TrainingInterrupted:
        """Write the checkpoint (the current weights), give the model the best weights so far, and
        describe the stop."""
        if self.checkpointing.path is not None:
            self.save()
        if self.validate is not None:
            self.model.load_state_dict(self.best_state)
        return TrainingInterrupted(signal_number, self.result(), self.checkpoint_path)

    def finish(self) -> None:
        """The end of the run: the best weights into the model, and the last checkpoint."""
        if self.validate is not None:
            self.model.load_state_dict(self.best_state)
        if self.checkpointing.path is not None:
            self.save(complete=True)

    def result(self) -> Any:
        self.history.wall_time = time.perf_counter() - self.start
        return self.make_result(self.history)


def _check_rows(name: str, data: Rows | None, context: Rows | None) -> None:
    if data is None and context is not None:
        raise ValueError(f"{name}_context given without {name}_data")
    if data is None:
        return
    if len(data.shape) < 2 or data.shape[0] < 1 or not all_finite(data):
        raise ValueError(f"{name}_data must be a finite (rows, features...) tensor with at least one row")
    if context is not None and context.shape[0] != data.shape[0]:
        raise ValueError(
            f"{name}_context has {context.shape[0]} rows but {name}_data has {data.shape[0]}; "
            "the context needs one row per data row"
        )


def _placed(values: Rows | None, device: torch.device, dtype: torch.dtype) -> Rows | None:
    """Tensors on the training device in the model's dtype (:func:`on_device`); rows read on demand stay
    where they are, and each batch read is moved (:func:`_batch`)."""
    return values if values is None or isinstance(values, LazyRows) else on_device(values, device, dtype)


def _batch(values: Rows, index: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The rows ``index`` of ``values``, on ``device`` and (floating ones) in ``dtype``."""
    if isinstance(values, LazyRows):
        return on_device(values.take(index), device, dtype)
    return values[index]


def _adam(parameters: list[nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """``torch.optim.Adam``, with PyTorch's fused kernel (one update for every parameter) when all the
    parameters are floating point on the CPU or a CUDA device, where it has one: an epoch of the digits
    VAE (8 planar layers) took 0.105 s instead of 0.156 s on 2 CPU cores. Its updates equal the
    default kernel's to rounding."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)


def _seeded(seed: int | None) -> torch.Generator | None:
    """A CPU generator for the shuffles and the per-batch noise, and torch seeded too, when ``seed`` is set."""
    if seed is None:
        return None
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return generator


def _checkpointing(
    loop: str,
    model: nn.Module,
    settings: dict[str, Any],
    checkpoint: StatePath | None,
    checkpoint_every: int | None,
    resume: StatePath | None,
    seed: int | None,
) -> tuple[Checkpointing, torch.Generator | None]:
    """The loop's checkpointing (with the training state in ``resume``, checked against ``model`` and
    ``settings``) and its generator: the resumed run's, else a new one from ``seed``."""
    if checkpoint_every is not None:
        positive_int("checkpoint_every", checkpoint_every)
    if resume is None:
        return Checkpointing(loop, settings, checkpoint, checkpoint_every), _seeded(seed)
    saved = load_state(resume, loop, model)
    check_settings(saved, settings, resume)
    generator = restore(lambda: restored_generator(saved["generator"]), resume)
    return Checkpointing(loop, settings, checkpoint, checkpoint_every, saved, resume), generator


def fit_data(
    model: FlowModel,
    train_data: torch.Tensor | np.ndarray | LazyRows,
    validation_data: torch.Tensor | np.ndarray | LazyRows | None = None,
    *,
    train_context: torch.Tensor | np.ndarray | LazyRows | None = None,
    validation_context: torch.Tensor | np.ndarray | LazyRows | None = None,
    levels: int | None = None,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str | None = "cosine",
    clip_grad_norm: float | None = 10.0,
    patience: int | None = 10,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: StatePath | None = None,
    checkpoint_every: int | None = None,
    resume: StatePath | None = None,
) -> DataFitResult:
    """Maximum likelihood (forward KL) on a data set until convergence.

    Shuffled mini-batches of ``batch_size`` for up to ``epochs`` epochs with Adam(``lr``,
    ``weight_decay``); the learning rate follows ``schedule`` (``"cosine"`` annealing to 0 over
    the epochs, ``"plateau"``: halved after 3 epochs without validation improvement, or None);
    gradients are clipped to norm ``clip_grad_norm``. After every epoch the validation NLL is
    computed; training stops after ``patience`` epochs without improvement and the best weights
    are restored (without validation data: the last weights, no early stopping). A non-finite
    loss restores the best weights and raises :class:`~flowforge.training.TrainingDiverged`.

    Conditional models take ``train_context`` / ``validation_context``: one context row (or class
    label) per data row. With ``levels`` the data are integer levels (e.g. pixel values 0…levels−1),
    dequantised afresh in every batch by :func:`~flowforge.datasets.dequantize`, and the reported NLLs
    are those of the discrete data (see :func:`~flowforge.metrics.mean_nll`).

    Data larger than memory: any of the four may be a :class:`~flowforge.streaming.LazyRows` (a ``.npy``
    file opened by :meth:`~flowforge.streaming.LazyRows.open`, with a selection of rows and columns and
    a transform such as whitening) or a 2-D NumPy array (e.g. ``np.load(path, mmap_mode="r")``; other
    NumPy arrays, such as 1-D labels, are read into memory, :func:`~flowforge.streaming.as_rows`): only
    the rows of the current batch (and of the current validation chunk) are read, so the memory the fit
    holds is bounded by the batch and the shuffled order (8 bytes per row), not by the file. The batches
    are the same rows as from a tensor of the same values, so the fit is the same.

    ``checkpoint``, ``checkpoint_every`` (epochs; by default after an epoch that ends
    :data:`CHECKPOINT_SECONDS` or more after the last write) and ``resume`` write and continue a
    training state as in :func:`~flowforge.training.fit` (see :func:`run_epochs`): a resumed run ends in the state of an
    uninterrupted one, bit for bit on the CPU, also when it was interrupted mid-epoch; the data must be
    the same, and the settings that change the run's course (rows, ``levels``, ``epochs``,
    ``batch_size``, ``lr``, ``weight_decay``, ``schedule``, ``clip_grad_norm``, ``patience``, whether
    there is validation data) those of the run. SIGINT, SIGTERM and SIGHUP stop the fit after the
    current batch with :class:`~flowforge.training.TrainingInterrupted`; the model then holds the best
    weights so far.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    if levels is not None:
        positive_int("levels", levels)
    check_patience(patience)
    check_learning_rate(lr)
    train_data = as_rows(train_data, "train_data")
    validation_data = None if validation_data is None else as_rows(validation_data, "validation_data")
    train_context = None if train_context is None else as_rows(train_context, "train_context")
    validation_context = None if validation_context is None else as_rows(validation_context, "validation_context")
    _check_rows("train", train_data, train_context)
    _check_rows("validation", validation_data, validation_context)
    if validation_data is not None and (train_context is None) != (validation_context is None):
        raise ValueError("give a context for both the training and the validation data, or for neither")
    world = None
    if launched():
        world, device, seed = enter(
            device, seed, rows=train_data.shape[0], data=total(train_data),
            context=0.0 if train_context is None else total(train_context),
            validation_rows=-1 if validation_data is None else validation_data.shape[0],
            validation_data=0.0 if validation_data is None else total(validation_data),
            checkpoint=float(checkpoint is not None), resume=float(resume is not None),
        )  # fmt: skip
    device, parameters, lipschitz_layers = prepare(model, device)
    dtype = parameters[0].dtype
    train_data = cast(Rows, _placed(train_data, device, dtype))
    validation_data = _placed(validation_data, device, dtype)
    train_context = _placed(train_context, device, dtype)
    validation_context = _placed(validation_context, device, dtype)
    settings = {
        "rows": train_data.shape[0], "levels": levels, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "schedule": schedule, "clip_grad_norm": clip_grad_norm, "patience": patience,
        "validation_rows": None if validation_data is None else validation_data.shape[0],
    }  # fmt: skip
    checkpointing, generator = _checkpointing("fit_data", model, settings, checkpoint, checkpoint_every, resume, seed)
    if world is not None and seed is not None and checkpointing.resumed is None:
        torch.manual_seed(process_seed(seed, world.rank))  # torch's own draws (dropout) differ between processes
    optimizer = _adam(parameters, lr=lr, weight_decay=weight_decay)
    forward_kl = ForwardKL()
    summed_nll = None if world is None else data_parallel(SummedNLL(model), device)

    def batch_loss(index: torch.Tensor, step: int) -> torch.Tensor:
        batch = _batch(train_data, index, device, dtype)
        if levels is not None:
            batch = dequantize(batch, levels, generator)  # the whole global batch: the noise of one process
        context = None if train_context is None else _batch(train_context, index, device, dtype)
        if summed_nll is None or world is None:
            return forward_kl(model, batch, context)
        part = world.part(batch.shape[0])
        return summed_nll(batch[part], None if context is None else context[part]) / batch.shape[0]

    def result(history: EpochHistory) -> DataFitResult:
        return DataFitResult(
            np.array(history.train), np.array(history.validation), history.best_epoch, history.stopped_early,
            history.wall_time,
        )  # fmt: skip

    judge = Judge("training NLL", "train", "validation", 4, train_offset=discrete_nll_offset(train_data, levels))
    validate = (
        None
        if validation_data is None
        else partial(mean_nll, model, validation_data, context=validation_context, levels=levels)
    )
    return run_epochs(
        model, train_data.shape[0], batch_loss, judge, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
        parameters=parameters, lipschitz_layers=lipschitz_layers, validate=validate, make_result=result,
        scheduler=make_scheduler(schedule, optimizer, epochs), clip_grad_norm=clip_grad_norm, patience=patience,
        generator=generator, progress=progress, checkpointing=checkpointing, world=world,
    )  # fmt: skip


def _check_vae_data(model: FlowVAE, name: str, data: torch.Tensor | None) -> None:
    if data is None:
        return
    model.check_data(data)
    if not torch.isfinite(data).all():
        raise ValueError(f"{name}_data holds non-finite values")
    if model.likelihood == "bernoulli" and not ((data >= 0) & (data <= 1)).all():
        raise ValueError(f"a Bernoulli VAE needs {name}_data in [0, 1] (binary, or intensities with binarize=True)")


def fit_vae(
    model: FlowVAE,
    train_data: torch.Tensor,
    validation_data: torch.Tensor | None = None,
    *,
    epochs: int = 1000,
    batch_size: int = 100,
    lr: float = 1e-3,
    warmup_epochs: int = 100,
    binarize_train: bool = False,
    validation_samples: int = 10,
    clip_grad_norm: float | None = 100.0,
    patience: int | None = 50,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: StatePath | None = None,
    checkpoint_every: int | None = None,
    resume: StatePath | None = None,
) -> VAEFitResult:
    """Train a :class:`~flowforge.vae.FlowVAE` by maximising the ELBO.

    Shuffled mini-batches of ``batch_size`` for up to ``epochs`` epochs with Adam(``lr``), one
    posterior sample per row, gradients clipped to norm ``clip_grad_norm``. The KL term's weight β
    rises linearly from 0 to 1 over the first ``warmup_epochs``, counted in steps (deterministic
    warm-up, Sønderby et al. 2016, https://arxiv.org/abs/1602.02282; :class:`~flowforge.losses.ELBO`).
    With ``binarize_train`` the training intensities in ``[0, 1]`` are binarised afresh in every batch
    (dynamic binarisation). After every epoch the validation ELBO (``validation_samples`` posterior
    samples per row) is computed; after the warm-up, training stops when it has not improved for
    ``patience`` epochs, and the best weights are restored (without validation data: the last
    weights). A non-finite loss restores the best weights and raises
    :class:`~flowforge.training.TrainingDiverged`.

    ``checkpoint``, ``checkpoint_every`` (epochs) and ``resume`` write and continue a training state,
    and signals stop the fit, as in :func:`fit_data`; the settings a resumed run must share are the
    rows, ``epochs``, ``batch_size``, ``lr``, ``warmup_epochs``, ``binarize_train``,
    ``validation_samples``, ``clip_grad_norm``, ``patience`` and whether there is validation data.
    """
    single_process("fit_vae")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("validation_samples", validation_samples)):
        positive_int(name, value)
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be non-negative, got {warmup_epochs}")
    check_patience(patience)
    check_learning_rate(lr)
    _check_vae_data(model, "train", train_data)
    _check_vae_data(model, "validation", validation_data)
    device, parameters, lipschitz_layers = prepare(model, device)
    train_data = train_data.to(device=device, dtype=parameters[0].dtype)
    settings = {
        "rows": train_data.shape[0], "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "warmup_epochs": warmup_epochs, "binarize_train": binarize_train, "validation_samples": validation_samples,
        "clip_grad_norm": clip_grad_norm, "patience": patience,
        "validation_rows": None if validation_data is None else validation_data.shape[0],
    }  # fmt: skip
    checkpointing, generator = _checkpointing("fit_vae", model, settings, checkpoint, checkpoint_every, resume, seed)
    optimizer = _adam(parameters, lr=lr)
    elbo = ELBO(warmup_epochs * -(-train_data.shape[0] // batch_size))

    def batch_loss(index: torch.Tensor, step: int) -> torch.Tensor:
        batch = train_data[index]
        if binarize_train:
            batch = binarize(batch, generator)
        return elbo(model, batch, elbo.beta(step))

    def result(history: EpochHistory) -> VAEFitResult:
        return VAEFitResult(
            np.array(history.train), np.array(history.validation), history.best_epoch, history.stopped_early,
            history.wall_time,
        )  # fmt: skip

    judge = Judge("the VAE's loss", "loss", "validation_elbo", 3, higher_is_better=True, warmup_epochs=warmup_epochs)
    return run_epochs(
        model, train_data.shape[0], batch_loss, judge, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
        parameters=parameters, lipschitz_layers=lipschitz_layers,
        validate=None if validation_data is None else partial(mean_elbo, model, validation_data, validation_samples),
        make_result=result, clip_grad_norm=clip_grad_norm, patience=patience, generator=generator, progress=progress,
        checkpointing=checkpointing,
    )  # fmt: skip
