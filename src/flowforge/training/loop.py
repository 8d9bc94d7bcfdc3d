"""The step loop: :func:`fit` runs a fixed number of optimisation steps of one loss.

The loss is a name from :data:`flowforge.losses.LOSSES` (``"reverse_kl"`` to the model's target,
annealed; ``"forward_kl"`` to data or a sampler; ``"alpha_divergence"``) or a loss object
(:class:`~flowforge.losses.ForwardKL`, :class:`~flowforge.losses.ReverseKL`,
:class:`~flowforge.losses.AlphaDivergence`, or a user's object with the same call form).

``fit`` owns the loop, so it can do what a hand-written loop usually does not: keep the loss history
on the device without per-step host syncs, compile the whole step when the run is long enough to
pay for it (:mod:`flowforge.training.accelerate`, falling back to eager when compilation fails),
check for NaN/inf every few steps and restore the last good state, call back periodically
(e.g. for frames), write a training state to resume from (:mod:`flowforge.training.checkpoint`), and
stop cleanly on SIGINT, SIGTERM or SIGHUP (:mod:`flowforge.training.interrupt`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .. import losses
from ..fab import FAB
from ..losses import ELBO, AlphaDivergence, ForwardKL, ReverseKL
from ..metrics import FlowModel
from ..progress import progress_bar
from ..utils.batch_statistics import local, synchronized
from ..utils.checks import positive_int
from . import accelerate
from .accelerate import COMPILE_MODES, EagerStep, Step
from .checkpoint import (
    StatePath,
    callback_states,
    check_settings,
    load_callback_states,
    load_state,
    restore,
    rng_states,
    save_state,
)
from .common import Every, FitResult, TrainingDiverged, TrainingInterrupted, check_learning_rate, on_device, prepare
from .distributed import (
    Share,
    World,
    agree,
    data_parallel,
    enter,
    every_rng_state,
    launched,
    process_seed,
    restore_rng_state,
)
from .interrupt import DeferredSignals

STEP_LOSSES = ("reverse_kl", "forward_kl", "alpha_divergence", "fab")
"""The loss names :func:`fit` takes (the ELBO trains by epochs, with :func:`~flowforge.training.fit_vae`)."""

Data = torch.Tensor | Callable[[int], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]


def _loss_object(loss: str | Any, samples_per_step: int, anneal_iters: int | None, beta0: float, score_fn: bool) -> Any:
    """The loss object :func:`fit` runs: built from a name and the keywords, or the given object."""
    if isinstance(loss, str):
        if loss not in STEP_LOSSES:
            raise ValueError(f"loss must be one of {STEP_LOSSES} or a loss object, got {loss!r}")
        if loss == "reverse_kl":
            return ReverseKL(samples_per_step, anneal_iters, beta0, score_fn)
        if loss == "alpha_divergence":
            return AlphaDivergence(samples_per_step)
        if loss == "fab":
            if anneal_iters is not None:
                raise ValueError("FAB is not annealed: leave anneal_iters at None")
            return FAB(samples_per_step)
        return ForwardKL()
    if isinstance(loss, ELBO) or not callable(loss):
        raise ValueError(
            f"loss must be one of {STEP_LOSSES} or a loss object (ForwardKL, ReverseKL, AlphaDivergence or one "
            f"with the same call form; the ELBO trains with fit_vae), got {loss!r}"
        )
    if anneal_iters is not None or beta0 != 0.01 or not score_fn:
        raise ValueError("anneal_iters, beta0 and score_fn go with a loss name; a loss object carries its own")
    return loss


def _validate(iterations: int, samples_per_step: int, compile: str | bool, lr: float) -> str:
    positive_int("iterations", iterations)
    positive_int("samples_per_step", samples_per_step)
    check_learning_rate(lr)
    mode = {True: "on", False: "off"}.get(compile, compile) if isinstance(compile, bool) else compile
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {COMPILE_MODES} or a bool, got {compile!r}")
    return mode


def _batch_source(
    name: str, data: Data | None, context: torch.Tensor | None, device: torch.device, dtype: torch.dtype
) -> Callable[[int], Any]:
    """``n -> batch`` (or ``n -> (batch, contexts)``) for a data loss: rows drawn with replacement from
    a tensor (with their per-row contexts), or what a sampler returns, on ``device``."""
    needs = f"{name} needs data: a (num_samples, ...) tensor or a callable n -> samples"
    if data is None:
        raise ValueError(needs)
    if callable(data):
        if context is not None:
            raise ValueError("with a sampler as data, return (samples, contexts) from it instead of passing context")

        def sampled(n: int) -> Any:
            drawn = data(n)
            if isinstance(drawn, tuple):
                return tuple(on_device(part, device, dtype) for part in drawn)
            return drawn.to(device=device, dtype=dtype)

        return sampled
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] < 1:
        raise ValueError(needs)
    if not torch.isfinite(data).all():
        raise ValueError(f"{name} data contains NaN or infinite values")
    if context is not None and context.shape[0] != data.shape[0]:
        raise ValueError(
            f"context has {context.shape[0]} rows but data has {data.shape[0]}; a data loss takes one context row "
            "per data row"
        )
    stored, contexts = data.to(device=device, dtype=dtype), _finite_context(context, device, dtype)

    def drawn(n: int) -> Any:
        index = torch.randint(0, stored.shape[0], (n,), device=device)
        return stored[index] if contexts is None else (stored[index], contexts[index])

    return drawn


def _finite_context(context: torch.Tensor | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """``context`` on the device, checked once here so that a step need not check it again."""
    context = on_device(context, device, dtype)
    if context is not None and context.is_floating_point() and not torch.isfinite(context).all():
        raise ValueError("context contains NaN or infinite values")
    return context


def _objective_and_input(
    loss: Any, samples_per_step: int, data: Data | None, context: torch.Tensor | None, device, dtype
) -> tuple[accelerate.Objective, Callable[[int], Any]]:
    """The step's objective ``(model, value) -> loss`` and ``it -> value``, its input at step ``it``."""
    name = getattr(loss, "name", type(loss).__name__)
    if getattr(loss, "needs_data", False):
        draw = _batch_source(name, data, context, device, dtype)

        def data_objective(model: nn.Module, value: Any) -> torch.Tensor:
            return loss(model, *value) if isinstance(value, tuple) else loss(model, value)

        return data_objective, lambda it: draw(samples_per_step)
    beta = torch.tensor(1.0, dtype=dtype, device=device)
    fixed_context = _finite_context(context, device, dtype)
    schedule = getattr(loss, "beta", None)

    def sample_objective(model: nn.Module, value: torch.Tensor) -> torch.Tensor:
        return loss(model, value, context=fixed_context)

    return sample_objective, lambda it: beta.fill_(schedule(it) if schedule is not None else 1.0)


def fit(
    model: FlowModel,
    iterations: int,
    *,
    loss: str | Any = "reverse_kl",
    samples_per_step: int = 40,
    data: Data | None = None,
    context: torch.Tensor | None = None,
    anneal_iters: int | None = None,
    beta0: float = 0.01,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    optimizer: torch.optim.Optimizer | None = None,
    score_fn: bool = True,
    seed: int | None = None,
    device: str | torch.device | None = None,
    compile: str | bool = "auto",
    callbacks: Sequence[Every] = (),
    progress: bool = True,
    check_every: int = 100,
    checkpoint: StatePath | None = None,
    checkpoint_every: int = 1000,
    resume: StatePath | None = None,
) -> FitResult:
    """Fit ``model`` for ``iterations`` steps of ``loss`` and return a :class:`FitResult`.

    Args:
        loss: ``"reverse_kl"`` (to ``model.p``, annealed by ``β = min(1, β₀ + it/anneal_iters)`` when
            ``anneal_iters`` is set), ``"forward_kl"`` (to ``data``: a tensor of samples drawn from
            with replacement, or a callable ``n -> samples``), ``"alpha_divergence"`` (α = 1), or a
            loss object: :class:`~flowforge.losses.ReverseKL` / :class:`~flowforge.losses.AlphaDivergence`
            (or any object with ``needs_data = False``, called ``loss(model, beta, context=...)``, and an
            optional ``beta(iteration)``), :class:`~flowforge.losses.ForwardKL` (or any object with
            ``needs_data = True``, called ``loss(model, batch)`` or ``loss(model, batch, contexts)``).
        samples_per_step: samples drawn from the flow by a named sampling loss, or the batch size of
            a data loss.
        data: for a data loss, a tensor of samples or a sampler ``n -> samples`` (or
            ``n -> (samples, contexts)`` for a conditional model).
        context: a conditional model's context: for a sampling loss, the context every step samples
            at (one row, or one row per sample); for a data loss with a data tensor, one context
            row (or class label) per data row, drawn with its row.
        anneal_iters, beta0, score_fn: settings of the named reverse KL (``score_fn=False`` for the
            "sticking the landing" gradient); a loss object carries its own.
        optimizer: defaults to Adam(lr, weight_decay), fused where PyTorch supports it.
        seed: seeds torch's generators, making the run reproducible on the same machine.
        device: defaults to CUDA when available, else CPU; the model is moved there.
        compile: ``"on"`` compiles the training step: with the default optimizer and a loss that does
            not toggle ``requires_grad`` (not "sticking the landing", not DReG), loss, gradient and Adam
            update become one compiled function (:class:`~flowforge.training.accelerate.FusedAdamStep`)
            where this torch supports it, otherwise the loss and its backward are compiled.
            ``"auto"`` times the first steps eagerly and compiles when the rest of the run would take
            longer than :data:`~flowforge.training.accelerate.AUTO_COMPILE_PAYOFF_SECONDS`; ``"off"``
            never compiles. A failed compilation warns and training goes on eagerly.
        callbacks: :class:`Every` instances called with ``(iteration, model)``; a callback function
            with ``state_dict``/``load_state_dict`` is saved in the checkpoint and restored on resume.
        check_every: steps between NaN/inf checks (each check is one host sync). On a non-finite
            loss the model is restored to the state at the last good check and
            :class:`TrainingDiverged` is raised.
        checkpoint: a file to write the training state to, every ``checkpoint_every`` steps, after
            the last step and when interrupted (see :mod:`flowforge.training.checkpoint`: atomic and
            synced to the disk).
        resume: a training state written by ``fit(checkpoint=...)``: the model (built as the run's
            was), optimizer, random generators, compile decision, last good state, loss history and
            callbacks' states are restored, and the run goes on from the step it reached, to the state
            an uninterrupted run reaches: bit for bit on the CPU with the eager step. With a compiled
            step it resumes compiled (the ``"auto"`` decision is kept, not taken again); the fused step
            was measured bit-identical too on the CPU (resumed in a new process), and in general differs
            from the uninterrupted run at most by the rounding of the kernels it recompiles. The
            settings that change the run's course (loss, samples per step, lr, weight decay, the
            optimizer's type, ``check_every``, ``compile``) must be those of the run; ``iterations`` may
            be larger, to go on further. A state whose run is complete is restored and its result
            returned without a step. A file of another loop or model, or past ``iterations``, is a
            :class:`ValueError`.

    SIGINT, SIGTERM and SIGHUP (while ``fit`` runs in the main thread) stop the run at the next step
    boundary: the checkpoint is written, the model keeps the current weights (the last good ones if
    the loss became non-finite since the last check), and :class:`TrainingInterrupted` is raised with
    the result so far. A second Ctrl-C stops at once, with a :class:`KeyboardInterrupt`.

    Under ``torchrun`` (:mod:`flowforge.training.distributed`) a reverse or forward KL fit splits every
    step's ``samples_per_step`` samples across the processes: each draws its part with its own random
    stream (seeded by :func:`~flowforge.training.distributed.process_seed`) and computes its share of
    the step's mean loss, whose gradients ``DistributedDataParallel`` sums, so a step of ``N`` processes
    is a step of one process on all the samples (a conditional model's per-sample context rows are split
    alike). The step runs eagerly (``compile="on"`` is refused), the loss history is the global loss in
    every process, and the NaN checks, signals and checkpoints (written by process 0, with every
    process's random stream) agree across the processes. Callbacks run in process 0 only, with batch
    statistics of its own (they must not start collective operations of their own). The α-divergence,
    whose estimate is not a mean over samples, FAB and loss objects other than
    :class:`~flowforge.losses.ReverseKL` and :class:`~flowforge.losses.ForwardKL` train in one process
    only.
    """
    compile_mode = _validate(iterations, samples_per_step, compile, lr)
    positive_int("check_every", check_every)
    positive_int("checkpoint_every", checkpoint_every)
    loss = _loss_object(loss, samples_per_step, anneal_iters, beta0, score_fn)
    if isinstance(loss, ReverseKL | AlphaDivergence | FAB):
        losses.require_target(model)
    if not getattr(loss, "compilable", True):  # FAB: AIS inside the step
        if compile_mode == "on":
            raise ValueError(f"the {getattr(loss, 'name', type(loss).__name__)} loss runs eagerly; pass compile='off'")
        compile_mode = "off"
    world = None
    if launched():
        if not isinstance(loss, ReverseKL | ForwardKL):
            raise ValueError(
                "fit splits the samples of a step across processes for reverse_kl and forward_kl only; "
                f"{getattr(loss, 'name', type(loss).__name__)} trains in one process (run it without torchrun)"
            )
        world, device, seed = enter(
            device, seed, iterations=iterations, samples_per_step=samples_per_step,
            checkpoint=float(checkpoint is not None), resume=float(resume is not None),
        )  # fmt: skip
        compile_mode = _distributed_compile_mode(compile_mode, loss, samples_per_step, world)
    if seed is not None:
        torch.manual_seed(seed if world is None else process_seed(seed, world.rank))
    device, parameters, lipschitz_layers = prepare(model, device)
    saved = load_state(resume, "fit", model) if resume is not None else None
    dtype = parameters[0].dtype
    if world is None:
        objective, step_input = _objective_and_input(loss, samples_per_step, data, context, device, dtype)
    else:  # this process's part of the step's samples
        total = _step_samples(loss, samples_per_step)
        part = world.part_size(total)
        objective, step_input = _objective_and_input(
            _part_of(loss, part), part, data, _context_part(context, total, world, loss), device, dtype
        )
        objective = _scaled(data_parallel(Share(model, objective, part / total), device), world.size)
    default_optimizer = optimizer is None
    if optimizer is None:
        optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))
    settings = {
        **_loss_settings(loss),
        "samples_per_step": samples_per_step,
        "optimizer": type(optimizer).__name__,
        **({"lr": lr, "weight_decay": weight_decay} if default_optimizer else {}),
        "check_every": check_every,
        "compile": compile_mode,
    }
    if saved is not None:
        check_settings(saved, settings, str(resume))
        if saved["done"] > iterations:
            raise ValueError(
                f"the resume file {str(resume)!r} has done {saved['done']} iterations, more than the {iterations} "
                f"asked for; ask for {saved['done']} or more"
            )
    eager = EagerStep(model, objective, optimizer)
    # The fused step replaces the optimizer, so only the default Adam qualifies; "sticking the landing"
    # and DReG toggle requires_grad inside the loss, which parameter substitution does not allow.
    fusable = default_optimizer and getattr(loss, "score_fn", True) and not getattr(loss, "dreg", False)
    rows = getattr(loss, "num_samples", samples_per_step)

    def compiled() -> Step:
        return accelerate.compiled_step(eager, fusable, lr, weight_decay, rows)

    run = _StepRun(model, eager, compiled, iterations, settings, callbacks, device, dtype, world, loss)
    if saved is None:
        run.begin(compile_mode)
    else:
        restore(lambda: run.restore(saved, str(resume)), resume)
    with synchronized(None if world is None else world.group, world is not None):
        return run.run(step_input, lipschitz_layers, check_every, checkpoint, checkpoint_every, progress)


def _distributed_compile_mode(compile_mode: str, loss: Any, samples_per_step: int, world: World) -> str:
    """The compile mode of a distributed fit (eager), after checking that every process has a sample."""
    total = _step_samples(loss, samples_per_step)
    if total < world.size:
        raise ValueError(
            f"the samples of a step ({total}) must be at least as many as the processes ({world.size}), which "
            "split them"
        )
    if compile_mode == "on":
        raise ValueError("a distributed fit runs its step eagerly; pass compile='off' or 'auto'")
    return "off"


def _step_samples(loss: Any, samples_per_step: int) -> int:
    """The samples of a step: a reverse KL object's own number of them, else ``samples_per_step``."""
    return loss.num_samples if isinstance(loss, ReverseKL) else samples_per_step


def _part_of(loss: Any, part: int) -> Any:
    """The loss this process runs: a reverse KL drawing ``part`` samples a step (its part of them)."""
    if not isinstance(loss, ReverseKL) or loss.num_samples == part:
        return loss
    own = copy.copy(loss)
    own.num_samples = part
    return own


def _context_part(context: torch.Tensor | None, samples: int, world: World, loss: Any) -> Any:
    """This process's rows of a sampling loss's per-sample context (one row per sample of the step)."""
    if context is None or getattr(loss, "needs_data", False) or samples == 1:
        return context
    if context.dim() >= 1 and context.shape[0] == samples:
        return context[world.part(samples)]
    return context


def _scaled(share: nn.Module, size: int) -> accelerate.Objective:
    """The objective of a distributed step: this process's share times the number of processes, whose
    gradient ``DistributedDataParallel`` averages into the gradient of the sum of the shares."""

    def objective(model: nn.Module, value: Any) -> torch.Tensor:
        return share(value) * size

    return objective


def _loss_settings(loss: Any) -> dict[str, Any]:
    """The loss's type and, for flowforge's own losses, its settings (what a resumed run must share)."""
    settings: dict[str, Any] = {"loss": type(loss).__name__}
    if isinstance(loss, ReverseKL | AlphaDivergence | ForwardKL | FAB):
        simple = int | float | str | None
        changing = getattr(loss, "state_keys", ())  # what the loss changes as it trains (FAB's step size)
        settings.update(
            {key: value for key, value in vars(loss).items() if isinstance(value, simple) and key not in changing}
        )
    return settings


class _StepRun:
    """A fit by steps under way: its step, position, loss history, last good state and timings, which
    are what its training state records."""

    def __init__(
        self,
        model: nn.Module,
        eager: EagerStep,
        compiled: Callable[[], Step],
        iterations: int,
        settings: dict[str, Any],
        callbacks: Sequence[Every],
        device: torch.device,
        dtype: torch.dtype,
        world: World | None = None,
        loss: Any = None,
    ) -> None:
        self.world, self.writes = world, world is None or world.is_main
        self.stateful_loss = loss if hasattr(loss, "state_dict") and hasattr(loss, "load_state_dict") else None
        """a loss that keeps state between steps (FAB's buffer), saved in the training state"""
        self.model, self.eager, self.compiled = model, eager, compiled
        self.iterations, self.settings, self.callbacks, self.device = iterations, settings, callbacks, device
        self.stepper: Step = eager
        self.first_compiled_call = False
        self.decided = False
        """whether the compile decision is taken (by ``compile="on"``/``"off"`` from the start)"""
        self.history = torch.empty(iterations, dtype=dtype, device=device)
        self.done = 0
        self.good: tuple = ()
        self.good_until = 0
        self.probe_time = self.compile_time = self.step_time = self.earlier_wall_time = 0.0
        self.timed_steps = 0
        self.start = self.saved_at = -1.0

    def begin(self, compile_mode: str) -> None:
        if compile_mode == "on":
            self.stepper, self.first_compiled_call = self.compiled(), True
        self.decided = compile_mode != "auto"
        self.good = _snapshot(self.model, self.stepper)

    def restore(self, saved: dict[str, Any], path: str) -> None:
        """Continue from the training state ``saved`` (read from ``path``)."""
        self.model.load_state_dict(saved["model"])
        self.eager.optimizer.load_state_dict(saved["optimizer"])
        if saved["step"] != "eager":  # the compiled step takes the moments over from the eager optimizer
            self.stepper, self.first_compiled_call = self.compiled(), True
        self.decided = saved["decided"]
        self.done = saved["done"]
        self.history[: self.done] = saved["loss_history"]
        self.good, self.good_until = (saved["good_model"], self.eager, saved["good_optimizer"]), saved["good_until"]
        timing = saved["timing"]
        self.probe_time, self.compile_time, self.step_time = timing["probe"], timing["compile"], timing["step"]
        self.timed_steps, self.earlier_wall_time = timing["timed_steps"], timing["wall"]
        if self.writes:  # process 0 runs the callbacks (the others are given none)
            load_callback_states([callback.function for callback in self.callbacks], saved["callbacks"], path)
        if self.stateful_loss is not None and "loss_state" in saved:
            self.stateful_loss.load_state_dict(saved["loss_state"])
        restore_rng_state(self.world, saved["rng"])

    def state(self) -> dict[str, Any]:
        """What :meth:`restore` takes back."""
        good_model, good_stepper, good_stepper_state = self.good
        kind = "fused" if self.stepper.fused else "compiled" if self.stepper.compiled else "eager"
        return {
            "complete": self.done == self.iterations,
            "iterations": self.iterations,
            "done": self.done,
            "settings": self.settings,
            "model": self.model.state_dict(),
            "optimizer": accelerate.optimizer_state_dict(self.stepper, self.stepper.state(), self.eager),
            "step": kind,
            "decided": self.decided,
            "loss_history": self.history[: self.done].clone().cpu(),
            "good_model": good_model,
            "good_optimizer": accelerate.optimizer_state_dict(good_stepper, good_stepper_state, self.eager),
            "good_until": self.good_until,
            "timing": {
                "probe": self.probe_time,
                "compile": self.compile_time,
                "step": self.step_time,
                "timed_steps": self.timed_steps,
                "wall": time.perf_counter() - self.start,
            },
            "rng": every_rng_state(self.world, rng_states(self.device)),
            "callbacks": callback_states([callback.function for callback in self.callbacks]),
            **({} if self.stateful_loss is None else {"loss_state": self.stateful_loss.state_dict()}),
        }

    def save(self, path: StatePath) -> None:
        """Write the training state (process 0 of a distributed run, after every process has given its
        generators' states: every process calls this at the same step)."""
        state = self.state()
        if self.writes:
            save_state(path, "fit", state)
        self.saved_at = self.done

    def run(
        self,
        step_input: Callable[[int], Any],
        lipschitz_layers: Sequence[Any],
        check_every: int,
        checkpoint: StatePath | None,
        checkpoint_every: int,
        progress: bool,
    ) -> FitResult:
        self.start = time.perf_counter() - self.earlier_wall_time
        first = self.done
        bar = progress_bar(
            total=self.iterations, initial=first, enabled=progress and self.writes, unit="it", dynamic_ncols=True
        )
        with DeferredSignals() as signals:
            try:
                for it in range(first, self.iterations):
                    stop = self._step(it, step_input(it), timed=it > first, signals=signals)
                    for layer in lipschitz_layers:
                        layer.update_norm()
                    if self.done % check_every == 0 or self.done == self.iterations:
                        self._check(bar)
                    for callback in self.callbacks if self.writes else ():
                        if self.done % callback.interval == 0:
                            with local():  # process 0 alone: its batch statistics reduce over nobody else
                                callback.function(self.done, self.model)
                    bar.update(1)
                    if checkpoint is not None and (self.done % checkpoint_every == 0 or self.done == self.iterations):
                        self.save(checkpoint)
                    if stop or (self.world is None and signals.pending is not None):  # a signal since the step too
                        raise self._interrupted(signals.act(), checkpoint)
            finally:
                bar.close()
        return self.result()

    def _step(self, it: int, value: Any, timed: bool, signals: DeferredSignals) -> bool:
        """One step; returns whether to stop for a signal (in a distributed run, as every process does)."""
        step_start = time.perf_counter()
        if self.first_compiled_call:
            self.first_compiled_call = False
            loss_value, compile_time, self.stepper = accelerate.first_compiled_call(self.stepper, self.eager, value)
            self.compile_time += compile_time
        else:
            loss_value = self.stepper(value)
            if timed:
                elapsed = time.perf_counter() - step_start
                self.step_time += elapsed
                self.timed_steps += 1
                if accelerate.AUTO_PROBE_WARMUP <= it < accelerate.AUTO_PROBE_STEPS:
                    self.probe_time += elapsed
        stop = signals.pending is not None
        if self.world is not None:  # the sum of the shares (each times the number of processes)
            summed, stop = agree(loss_value / self.world.size, signals, self.world)
            loss_value = cast(torch.Tensor, summed)
        self.history[it] = loss_value
        self.done = it + 1
        if not self.decided and self.done == accelerate.AUTO_PROBE_STEPS and self.done < self.iterations:
            self.decided = True
            if accelerate.compile_pays(self.probe_time, self.iterations - self.done):
                self.stepper, self.first_compiled_call = self.compiled(), True
        return stop

    def _check(self, bar: Any) -> None:
        """Raise :class:`TrainingDiverged` (restoring the last good state) if a loss since the last check
        is not finite; else take the current state as the good one."""
        finite = torch.isfinite(self.history[self.good_until : self.done])
        if not bool(finite.all()):
            bad = self.good_until + int((~finite).nonzero()[0])
            _restore(self.model, self.good)
            raise TrainingDiverged(
                f"loss became {float(self.history[bad])} at iteration {bad + 1}; "
                f"the model was restored to its state after iteration {self.good_until}",
                _result(self.history[:bad], bad, self.start, self.step_time, self.timed_steps, self.stepper,
                        self.compile_time, self.device),
            )  # fmt: skip
        self.good, self.good_until = _snapshot(self.model, self.stepper), self.done
        bar.set_postfix(loss=f"{float(self.history[self.done - 1]):.4f}", refresh=False)

    def _interrupted(self, signal_number: int, checkpoint: StatePath | None) -> TrainingInterrupted:
        """Write the checkpoint (unless written at this step), leave the model usable, and describe the stop."""
        if checkpoint is not None and self.saved_at != self.done:
            self.save(checkpoint)  # every process: saved_at is the same in all
        if not bool(torch.isfinite(self.history[self.good_until : self.done]).all()):
            _restore(self.model, self.good)
        return TrainingInterrupted(signal_number, self.result(), None if checkpoint is None else Path(checkpoint))

    def result(self) -> FitResult:
        return _result(
            self.history[: self.done], self.done, self.start, self.step_time, self.timed_steps, self.stepper,
            self.compile_time, self.device,
        )  # fmt: skip


def _snapshot(model: nn.Module, stepper: Step) -> tuple:
    return copy.deepcopy(model.state_dict()), stepper, stepper.state()


def _restore(model: nn.Module, snapshot: tuple) -> None:
    model_state, stepper, stepper_state = snapshot
    model.load_state_dict(model_state)
    stepper.load(stepper_state)


def _result(history, iterations, start, step_time, timed_steps, stepper, compile_time, device) -> FitResult:
    # Compilation and the first (warm-up) step of a session are not timed; extrapolate the rest over all steps.
    step_time = step_time * iterations / timed_steps if timed_steps else float("nan")
    return FitResult(
        loss_history=history.detach().cpu().numpy(),
        iterations=iterations,
        wall_time=time.perf_counter() - start,
        step_time=step_time,
        compiled=stepper.compiled,
        compile_time=compile_time,
        device=str(device),
        fused=stepper.fused,
    )
