"""The step loop: :func:`fit` runs a fixed number of optimisation steps of one loss.

The loss is a name from :data:`flowforge.losses.LOSSES` (``"reverse_kl"`` to the model's target,
annealed; ``"forward_kl"`` to data or a sampler; ``"alpha_divergence"``) or a loss object
(:class:`~flowforge.losses.ForwardKL`, :class:`~flowforge.losses.ReverseKL`,
:class:`~flowforge.losses.AlphaDivergence`, or a user's object with the same call form).

``fit`` owns the loop, so it can do what a hand-written loop usually does not: keep the loss history
on the device without per-step host syncs, compile the whole step when the run is long enough to
pay for it (:mod:`flowforge.training.accelerate`, falling back to eager when compilation fails),
check for NaN/inf every few steps and restore the last good state, and call back periodically
(e.g. for frames).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .. import losses
from ..losses import ELBO, AlphaDivergence, ForwardKL, ReverseKL
from ..metrics import FlowModel
from ..progress import progress_bar
from ..utils.checks import positive_int
from . import accelerate
from .accelerate import COMPILE_MODES, EagerStep, Step
from .common import Every, FitResult, TrainingDiverged, check_learning_rate, on_device, prepare

STEP_LOSSES = ("reverse_kl", "forward_kl", "alpha_divergence")
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
        callbacks: :class:`Every` instances called with ``(iteration, model)``.
        check_every: steps between NaN/inf checks (each check is one host sync). On a non-finite
            loss the model is restored to the state at the last good check and
            :class:`TrainingDiverged` is raised.
    """
    compile_mode = _validate(iterations, samples_per_step, compile, lr)
    loss = _loss_object(loss, samples_per_step, anneal_iters, beta0, score_fn)
    if isinstance(loss, ReverseKL | AlphaDivergence):
        losses.require_target(model)
    if seed is not None:
        torch.manual_seed(seed)
    device, parameters, lipschitz_layers = prepare(model, device)
    dtype = parameters[0].dtype
    objective, step_input = _objective_and_input(loss, samples_per_step, data, context, device, dtype)
    default_optimizer = optimizer is None
    if optimizer is None:
        optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))
    eager = EagerStep(model, objective, optimizer)
    # The fused step replaces the optimizer, so only the default Adam qualifies; "sticking the landing"
    # and DReG toggle requires_grad inside the loss, which parameter substitution does not allow.
    fusable = default_optimizer and getattr(loss, "score_fn", True) and not getattr(loss, "dreg", False)
    rows = getattr(loss, "num_samples", samples_per_step)

    def compiled() -> Step:
        return accelerate.compiled_step(eager, fusable, lr, weight_decay, rows)

    stepper: Step = compiled() if compile_mode == "on" else eager
    first_compiled_call = compile_mode == "on"
    probe_time = compile_time = step_time = 0.0
    timed_steps = 0
    history = torch.empty(iterations, dtype=dtype, device=device)
    good_state, good_until = _snapshot(model, stepper), 0
    bar = progress_bar(total=iterations, enabled=progress, unit="it", dynamic_ncols=True)
    start = time.perf_counter()
    for it in range(iterations):
        step_start = time.perf_counter()
        value = step_input(it)
        if first_compiled_call:
            first_compiled_call = False
            loss_value, compile_time, stepper = accelerate.first_compiled_call(stepper, eager, value)
        else:
            loss_value = stepper(value)
            if it > 0:
                elapsed = time.perf_counter() - step_start
                step_time += elapsed
                timed_steps += 1
                if accelerate.AUTO_PROBE_WARMUP <= it < accelerate.AUTO_PROBE_STEPS:
                    probe_time += elapsed
        for layer in lipschitz_layers:
            layer.update_norm()
        history[it] = loss_value
        done = it + 1
        if compile_mode == "auto" and done == accelerate.AUTO_PROBE_STEPS and done < iterations:
            if accelerate.compile_pays(probe_time, iterations - done):
                stepper, first_compiled_call = compiled(), True
        if done % check_every == 0 or done == iterations:
            window = history[good_until:done]
            finite = torch.isfinite(window)
            if not bool(finite.all()):
                bad = good_until + int((~finite).nonzero()[0])
                _restore(model, good_state)
                bar.close()
                result = _result(history[:bad], bad, start, step_time, timed_steps, stepper, compile_time, device)
                raise TrainingDiverged(
                    f"loss became {float(history[bad])} at iteration {bad + 1}; "
                    f"the model was restored to its state after iteration {good_until}",
                    result,
                )
            good_state, good_until = _snapshot(model, stepper), done
            bar.set_postfix(loss=f"{float(history[done - 1]):.4f}", refresh=False)
        for callback in callbacks:
            if done % callback.interval == 0:
                callback.function(done, model)
        bar.update(1)
    bar.close()
    return _result(history, iterations, start, step_time, timed_steps, stepper, compile_time, device)


def _snapshot(model: nn.Module, stepper: Step) -> tuple:
    return copy.deepcopy(model.state_dict()), stepper, stepper.state()


def _restore(model: nn.Module, snapshot: tuple) -> None:
    model_state, stepper, stepper_state = snapshot
    model.load_state_dict(model_state)
    stepper.load(stepper_state)


def _result(history, iterations, start, step_time, timed_steps, stepper, compile_time, device) -> FitResult:
    # Compilation and the first (warm-up) step are not timed; extrapolate the rest over all steps.
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
