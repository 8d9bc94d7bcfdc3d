"""Fitting: ``fit`` runs a fixed number of steps of reverse KL with annealing (to a density) or
forward KL (to samples); ``fit_data`` trains on a data set by epochs until the validation NLL
stops improving; ``fit_vae`` does the same for a VAE with a flow posterior and the ELBO.

``fit`` owns the loop, so it can do what a hand-written loop usually does not: keep the
loss history on the device without per-step host syncs, compile the whole step (loss,
gradient and Adam update, see :mod:`flowforge.stepping`) when the run is long enough to pay
for it (falling back to eager when compilation fails), check for NaN/inf every few steps
and restore the last good state, and call back periodically (e.g. for frames).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .core import NormalizingFlow
from .datasets import binarize, dequantize
from .nets.lipschitz import SpectralNormLinear
from .stepping import EagerStep, FusedAdamStep
from .utils.checks import positive_int
from .vae import FlowVAE

LOSSES = ("reverse_kl", "forward_kl")
COMPILE_MODES = ("auto", "on", "off")
AUTO_PROBE_STEPS = 25
AUTO_PROBE_WARMUP = 5
AUTO_COMPILE_PAYOFF_SECONDS = 30.0
"""``compile="auto"`` times eager steps ``AUTO_PROBE_WARMUP``–``AUTO_PROBE_STEPS`` and compiles
the rest of the run when it would take longer than this eagerly. A cold compilation costs
15–25 s on 2 CPU cores (1–3 s from inductor's on-disk cache) and compiled steps are 3–10x
faster, so a run past this mark ends sooner compiled even on a fresh machine."""
# A step whose tensors are all tiny (the seed's 16 Planar layers on 40 points: 84 parameters, 80
# input numbers) compiles its few kernels without inductor's precompiled header, whose build costs
# more than it saves there (cold compile about 2.5 s shorter; the kernels are the same). Scalar
# kernels (cpp.simdlen=1) would save 4 s more but change the float rounding, and the demo's
# default seed then lands on a worse fit (KL 0.47 against 0.18), so they are not used.
TINY_STEP_ELEMENTS = 4096


def _compile_options(model: torch.nn.Module, samples_per_step: int, device: torch.device) -> dict | None:
    """Inductor options for the fused step: no precompiled header for tiny CPU steps, else the defaults."""
    shape = getattr(getattr(model, "q0", None), "shape", None)
    if device.type != "cpu" or not isinstance(shape, tuple):
        return None
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tiny = parameters <= TINY_STEP_ELEMENTS and samples_per_step * math.prod(shape) <= TINY_STEP_ELEMENTS
    return {"cpp_cache_precompile_headers": False} if tiny else None


class TrainingDiverged(RuntimeError):
    """Raised when the loss became NaN or infinite; the model holds the last good state."""

    def __init__(self, message: str, result: FitResult):
        super().__init__(message)
        self.result = result


@dataclass
class Every:
    """Call ``function(iteration, model)`` after every ``interval``-th step (1-based)."""

    interval: int
    function: Callable[[int, NormalizingFlow], None]

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"callback interval must be >= 1, got {self.interval}")


@dataclass
class FitResult:
    """What a fit did: loss per step, timing (seconds), whether it was compiled and whether the
    step was the fused one (loss, gradient and Adam update in one compiled call)."""

    loss_history: np.ndarray
    iterations: int
    wall_time: float
    step_time: float
    compiled: bool
    compile_time: float = 0.0
    device: str = "cpu"
    fused: bool = False

    @property
    def iterations_per_second(self) -> float:
        """Training steps per second, excluding compilation and callbacks."""
        return self.iterations / self.step_time if self.step_time > 0 else float("nan")


def annealing_beta(iteration: int, anneal_iters: int | None, beta0: float = 0.01) -> float:
    """``β = min(1, β₀ + it / anneal_iters)``; 1 when annealing is off (``anneal_iters`` falsy)."""
    if not anneal_iters:
        return 1.0
    return min(1.0, beta0 + iteration / anneal_iters)


def default_device() -> torch.device:
    """CUDA when available, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batch_source(data: torch.Tensor | Callable[[int], torch.Tensor], device: torch.device, dtype: torch.dtype):
    if callable(data):
        return lambda n: data(n).to(device=device, dtype=dtype)
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] < 1:
        raise ValueError("forward_kl needs data: a (num_samples, ...) tensor or a callable n -> samples")
    if not torch.isfinite(data).all():
        raise ValueError("forward_kl data contains NaN or infinite values")
    stored = data.to(device=device, dtype=dtype)
    return lambda n: stored[torch.randint(0, stored.shape[0], (n,), device=device)]


def _prepare(model: torch.nn.Module, device) -> tuple[torch.device, list[torch.nn.Parameter], list[SpectralNormLinear]]:
    """Move ``model`` to ``device`` (default: CUDA if available); return the device, the trainable
    parameters (at least one) and the Lipschitz layers whose spectral-norm estimates must be
    advanced after every step (residual flows)."""
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameters to fit")
    return device, parameters, [m for m in model.modules() if isinstance(m, SpectralNormLinear)]


def _validate(loss: str, iterations: int, samples_per_step: int, compile: str | bool, lr: float) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    positive_int("iterations", iterations)
    positive_int("samples_per_step", samples_per_step)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    mode = {True: "on", False: "off"}.get(compile, compile) if isinstance(compile, bool) else compile
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {COMPILE_MODES} or a bool, got {compile!r}")
    return mode


def fit(
    model: NormalizingFlow,
    iterations: int,
    *,
    loss: str = "reverse_kl",
    samples_per_step: int = 40,
    data: torch.Tensor | Callable[[int], torch.Tensor] | None = None,
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
    """Fit ``model`` for ``iterations`` steps and return a :class:`FitResult`.

    Args:
        loss: ``"reverse_kl"`` (to ``model.p``, annealed by ``β = min(1, β₀ + it/anneal_iters)``
            when ``anneal_iters`` is set) or ``"forward_kl"`` (to ``data``: a tensor of
            samples drawn from with replacement, or a callable ``n -> samples``).
        samples_per_step: samples drawn from the flow (reverse KL) or batch size (forward KL).
        optimizer: defaults to Adam(lr, weight_decay), fused where PyTorch supports it.
        score_fn: ``False`` for the "sticking the landing" reverse-KL gradient.
        seed: seeds torch's generators, making the run reproducible on the same machine.
        device: defaults to CUDA when available, else CPU; the model is moved there.
        compile: ``"on"`` compiles the training step: with the default optimizer (and
            ``score_fn``) loss, gradient and Adam update become one compiled function
            (:class:`~flowforge.stepping.FusedAdamStep`), otherwise the loss and its backward are
            compiled. ``"auto"`` times the first ``AUTO_PROBE_STEPS`` steps eagerly and compiles
            when the rest of the run would take more than ``AUTO_COMPILE_PAYOFF_SECONDS``;
            ``"off"`` never compiles. A failed compilation warns and training goes on eagerly.
        callbacks: :class:`Every` instances called with ``(iteration, model)``.
        check_every: steps between NaN/inf checks (each check is one host sync). On a
            non-finite loss the model is restored to the state at the last good check
            and :class:`TrainingDiverged` is raised.
    """
    compile_mode = _validate(loss, iterations, samples_per_step, compile, lr)
    if seed is not None:
        torch.manual_seed(seed)
    device, parameters, lipschitz_layers = _prepare(model, device)
    dtype = parameters[0].dtype
    if loss == "reverse_kl":
        model._require_target()
        beta = torch.tensor(1.0, dtype=dtype, device=device)

        def objective(flow: NormalizingFlow, beta: torch.Tensor) -> torch.Tensor:
            return flow.reverse_kld(samples_per_step, beta=beta, score_fn=score_fn)

        def step_input(it: int) -> torch.Tensor:
            return beta.fill_(annealing_beta(it, anneal_iters, beta0))
    else:
        if data is None:
            raise ValueError("forward_kl needs data: a (num_samples, ...) tensor or a callable n -> samples")
        draw = _batch_source(data, device, dtype)

        def objective(flow: NormalizingFlow, batch: torch.Tensor) -> torch.Tensor:
            return flow.forward_kld(batch)

        def step_input(it: int) -> torch.Tensor:
            return draw(samples_per_step)

    default_optimizer = optimizer is None
    if optimizer is None:
        fused = device.type in ("cpu", "cuda")
        optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=fused)
    eager = EagerStep(model, objective, optimizer)
    # The fused step replaces the optimizer, so only the default Adam qualifies; "sticking the
    # landing" toggles requires_grad inside the loss, which parameter substitution does not allow.
    fusable = default_optimizer and score_fn and FusedAdamStep.supports(model)

    def compiled_step() -> EagerStep | FusedAdamStep:
        if fusable:
            return FusedAdamStep.from_eager(eager, lr, weight_decay, _compile_options(model, samples_per_step, device))
        return EagerStep(model, objective, optimizer, compiled=True)

    stepper = compiled_step() if compile_mode == "on" else eager
    first_compiled_call = compile_mode == "on"
    probe_time = 0.0
    history = torch.empty(iterations, dtype=dtype, device=device)
    good_state = _snapshot(model, stepper)
    good_until = 0
    compile_time = step_time = 0.0
    timed_steps = 0
    bar = tqdm(total=iterations, disable=not progress, unit="it", dynamic_ncols=True)
    start = time.perf_counter()
    for it in range(iterations):
        step_start = time.perf_counter()
        value = step_input(it)
        if first_compiled_call:
            first_compiled_call = False
            loss_value, compile_time, stepper = _first_compiled_call(stepper, eager, value)
        else:
            loss_value = stepper(value)
            if it > 0:
                elapsed = time.perf_counter() - step_start
                step_time += elapsed
                timed_steps += 1
                if AUTO_PROBE_WARMUP <= it < AUTO_PROBE_STEPS:
                    probe_time += elapsed
        for layer in lipschitz_layers:
            layer.update_norm()
        history[it] = loss_value
        done = it + 1
        if compile_mode == "auto" and done == AUTO_PROBE_STEPS and done < iterations:
            projected = probe_time / (AUTO_PROBE_STEPS - AUTO_PROBE_WARMUP) * (iterations - done)
            if projected > AUTO_COMPILE_PAYOFF_SECONDS:
                stepper, first_compiled_call = compiled_step(), True
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


def _first_compiled_call(stepper, eager: EagerStep, value: torch.Tensor):
    """Run the first compiled step, timing compilation; on failure warn and go on eagerly."""
    start = time.perf_counter()
    try:
        loss_value = stepper(value)
        return loss_value, time.perf_counter() - start, stepper
    except Exception as error:  # inductor raises many types (missing compiler, unsupported op)
        warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); training eagerly", stacklevel=3)
        return eager(value), 0.0, eager


def _snapshot(model: torch.nn.Module, stepper) -> tuple:
    return copy.deepcopy(model.state_dict()), stepper, stepper.state()


def _restore(model: torch.nn.Module, snapshot: tuple) -> None:
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


SCHEDULES = (None, "cosine", "plateau")


@dataclass
class DataFitResult:
    """What a fit to data did, epoch by epoch (NLL in nats per sample)."""

    train_nll: np.ndarray
    validation_nll: np.ndarray
    best_epoch: int
    stopped_early: bool
    wall_time: float

    @property
    def best_validation_nll(self) -> float:
        return float(self.validation_nll[self.best_epoch]) if len(self.validation_nll) else float("nan")


def _nll_offset(data: torch.Tensor, levels: int | None) -> float:
    """``D log levels``: turns the density of data dequantised and scaled to ``[0, 1)`` into the
    likelihood bound of the discrete data (Theis et al. 2016, https://arxiv.org/abs/1511.01844)."""
    return 0.0 if levels is None else data[0].numel() * math.log(levels)


@torch.no_grad()
def nll_per_row(
    model: NormalizingFlow,
    data: torch.Tensor,
    batch_size: int = 4096,
    context: torch.Tensor | None = None,
    levels: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``−log q(x)`` (or ``−log q(x | c)`` with a per-row ``context``) for every row of ``data``, in
    chunks on the model's device; float64 on the CPU.

    With ``levels``, ``data`` holds integer levels ``0 … levels−1`` and each value is the discrete
    NLL bound of uniform dequantisation, ``−log q((k + u)/levels) + D log levels``, with one seeded
    draw of ``u ~ U[0, 1)^D`` per row.
    """
    like = next(iter(model.parameters()), data)
    data = data.to(device=like.device, dtype=like.dtype)
    if context is not None:
        context = context.to(device=like.device, dtype=like.dtype if context.is_floating_point() else context.dtype)
    if levels is not None:
        data = dequantize(data, levels, torch.Generator(device="cpu").manual_seed(seed))
    values = []
    for index in torch.arange(data.shape[0], device=data.device).split(batch_size):
        rows = data[index]
        log_q = model.log_prob(rows) if context is None else model.log_prob(rows, context[index])
        values.append(-log_q.double().cpu())
    return torch.cat(values) + _nll_offset(data, levels)


def mean_nll(
    model: NormalizingFlow,
    data: torch.Tensor,
    batch_size: int = 4096,
    context: torch.Tensor | None = None,
    levels: int | None = None,
    seed: int = 0,
) -> float:
    """The mean of :func:`nll_per_row`: nats per row (per image)."""
    return float(nll_per_row(model, data, batch_size, context, levels, seed).mean())


def _check_rows(name: str, data: torch.Tensor | None, context: torch.Tensor | None) -> None:
    if data is None and context is not None:
        raise ValueError(f"{name}_context given without {name}_data")
    if data is None:
        return
    if data.dim() < 2 or data.shape[0] < 1 or not torch.isfinite(data).all():
        raise ValueError(f"{name}_data must be a finite (rows, features...) tensor with at least one row")
    if context is not None and context.shape[0] != data.shape[0]:
        raise ValueError(
            f"{name}_context has {context.shape[0]} rows but {name}_data has {data.shape[0]}; "
            "the context needs one row per data row"
        )


def fit_data(
    model: NormalizingFlow,
    train_data: torch.Tensor,
    validation_data: torch.Tensor | None = None,
    *,
    train_context: torch.Tensor | None = None,
    validation_context: torch.Tensor | None = None,
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
) -> DataFitResult:
    """Maximum likelihood on a data set until convergence.

    Shuffled mini-batches of ``batch_size`` for up to ``epochs`` epochs with Adam(``lr``,
    ``weight_decay``); the learning rate follows ``schedule`` (``"cosine"`` annealing to 0 over
    the epochs, ``"plateau"``: halved after 3 epochs without validation improvement, or None);
    gradients are clipped to norm ``clip_grad_norm``. After every epoch the validation NLL is
    computed; training stops after ``patience`` epochs without improvement and the best weights
    are restored (without validation data: the last weights, no early stopping). A non-finite
    loss restores the best weights and raises :class:`TrainingDiverged`.

    Conditional models (:class:`~flowforge.ConditionalNormalizingFlow`, :class:`~flowforge.ClassCondFlow`,
    a class-conditional :class:`~flowforge.MultiscaleFlow`) take ``train_context`` /
    ``validation_context``: one context row (or class label) per data row. With ``levels``
    the data are integer levels (e.g. pixel values 0…levels−1), dequantised afresh in every batch
    by :func:`dequantize`, and the reported NLLs are those of the discrete data (see :func:`mean_nll`).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    if levels is not None:
        positive_int("levels", levels)
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be positive or None, got {patience}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    _check_rows("train", train_data, train_context)
    _check_rows("validation", validation_data, validation_context)
    if validation_data is not None and (train_context is None) != (validation_context is None):
        raise ValueError("give a context for both the training and the validation data, or for neither")
    device, parameters, lipschitz_layers = _prepare(model, device)
    dtype = parameters[0].dtype

    def to_device(values: torch.Tensor | None) -> torch.Tensor | None:
        if values is None:
            return None
        return values.to(device=device, dtype=dtype if values.is_floating_point() else values.dtype)

    train_data, validation_data = to_device(train_data), to_device(validation_data)
    train_context, validation_context = to_device(train_context), to_device(validation_context)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if seed is not None:
        torch.manual_seed(seed)
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        if schedule == "cosine"
        else torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
        if schedule == "plateau"
        else None
    )
    offset = _nll_offset(train_data, levels)
    train_history: list[float] = []
    validation_history: list[float] = []
    best_state, best_epoch, best_value = copy.deepcopy(model.state_dict()), 0, float("inf")
    stopped_early = False
    start = time.perf_counter()
    bar = tqdm(range(epochs), disable=not progress, unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        model.train()
        order = torch.randperm(train_data.shape[0], generator=generator).to(device)
        total, count = torch.zeros((), dtype=dtype, device=device), 0
        for batch_index in order.split(batch_size):
            batch = train_data[batch_index]
            if levels is not None:
                batch = dequantize(batch, levels, generator)
            optimizer.zero_grad(set_to_none=True)
            if train_context is None:
                loss = model.forward_kld(batch)
            else:
                loss = model.forward_kld(batch, train_context[batch_index])
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
            optimizer.step()
            for layer in lipschitz_layers:
                layer.update_norm()
            total += loss.detach() * batch.shape[0]
            count += batch.shape[0]
        train_value = float(total) / count + offset
        if not math.isfinite(train_value):
            model.load_state_dict(best_state)
            result = DataFitResult(
                np.array(train_history), np.array(validation_history), best_epoch, False, time.perf_counter() - start
            )
            raise TrainingDiverged(
                f"training NLL became {train_value} in epoch {epoch + 1}; the best weights were restored", result
            )
        train_history.append(train_value)
        model.eval()
        if validation_data is not None:
            value = mean_nll(model, validation_data, context=validation_context, levels=levels)
            validation_history.append(value)
            if value < best_value:
                best_value, best_epoch, best_state = value, epoch, copy.deepcopy(model.state_dict())
            bar.set_postfix(train=f"{train_value:.4f}", validation=f"{value:.4f}", refresh=False)
        else:
            best_epoch = epoch
            bar.set_postfix(train=f"{train_value:.4f}", refresh=False)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(validation_history[-1] if validation_history else train_value)
        elif scheduler is not None:
            scheduler.step()
        if validation_data is not None and patience is not None and epoch - best_epoch >= patience:
            stopped_early = True
            break
    bar.close()
    if validation_data is not None:
        model.load_state_dict(best_state)
    return DataFitResult(
        np.array(train_history), np.array(validation_history), best_epoch, stopped_early, time.perf_counter() - start
    )


@dataclass
class VAEFitResult:
    """What :func:`fit_vae` did, epoch by epoch (nats per data point)."""

    train_loss: np.ndarray
    """the mean training loss: the negative ELBO with the KL term weighted by the warm-up β"""
    validation_elbo: np.ndarray
    best_epoch: int
    stopped_early: bool
    wall_time: float

    @property
    def best_validation_elbo(self) -> float:
        return float(self.validation_elbo[self.best_epoch]) if len(self.validation_elbo) else float("nan")


def _rows_in_chunks(model: FlowVAE, data: torch.Tensor, batch_size: int, per_row) -> torch.Tensor:
    """``per_row(rows)`` over ``data`` in chunks on the model's device, as float64 on the CPU."""
    like = next(iter(model.parameters()))
    data = data.to(device=like.device, dtype=like.dtype)
    with torch.no_grad():
        return torch.cat([per_row(rows).double().cpu() for rows in data.split(batch_size)])


def elbo_per_row(model: FlowVAE, data: torch.Tensor, num_samples: int = 10, batch_size: int = 1024) -> torch.Tensor:
    """The ELBO of every row of ``data``, each with ``num_samples`` posterior samples."""
    return _rows_in_chunks(model, data, batch_size, lambda rows: model.elbo(rows, num_samples))


def log_likelihood_per_row(
    model: FlowVAE, data: torch.Tensor, num_samples: int = 1000, batch_size: int = 256
) -> torch.Tensor:
    """The importance-sampled ``log p(x)`` (:meth:`FlowVAE.log_likelihood`) of every row of ``data``."""
    return _rows_in_chunks(model, data, batch_size, lambda rows: model.log_likelihood(rows, num_samples))


def mean_elbo(model: FlowVAE, data: torch.Tensor, num_samples: int = 10, batch_size: int = 1024) -> float:
    """The ELBO averaged over the rows of ``data`` (each with ``num_samples`` posterior samples)."""
    return float(elbo_per_row(model, data, num_samples, batch_size).mean())


def mean_log_likelihood(
    model: FlowVAE, data: torch.Tensor, num_samples: int = 1000, batch_size: int = 256
) -> tuple[float, float]:
    """The importance-sampled ``log p(x)`` averaged over the rows of ``data``, and its standard error
    over the rows."""
    values = log_likelihood_per_row(model, data, num_samples, batch_size)
    standard_error = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), standard_error


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
) -> VAEFitResult:
    """Train a :class:`~flowforge.vae.FlowVAE` by maximising the ELBO.

    Shuffled mini-batches of ``batch_size`` for up to ``epochs`` epochs with Adam(``lr``), one
    posterior sample per row, gradients clipped to norm ``clip_grad_norm``. The KL term's weight β
    rises linearly from 0 to 1 over the first ``warmup_epochs`` (deterministic warm-up, Sønderby et al.
    2016, https://arxiv.org/abs/1602.02282). With ``binarize_train`` the training intensities in
    ``[0, 1]`` are binarised afresh in every batch (dynamic binarisation). After every epoch the
    validation ELBO (``validation_samples`` posterior samples per row) is computed; after the warm-up,
    training stops when it has not improved for ``patience`` epochs, and the best weights are restored
    (without validation data: the last weights). A non-finite loss restores the best weights and raises
    :class:`TrainingDiverged`.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("validation_samples", validation_samples)):
        positive_int(name, value)
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be non-negative, got {warmup_epochs}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be positive or None, got {patience}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    _check_vae_data(model, "train", train_data)
    _check_vae_data(model, "validation", validation_data)
    device, parameters, _ = _prepare(model, device)
    dtype = parameters[0].dtype
    train_data = train_data.to(device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if seed is not None:
        torch.manual_seed(seed)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    steps_per_epoch = -(-train_data.shape[0] // batch_size)
    warmup_steps = warmup_epochs * steps_per_epoch
    train_history: list[float] = []
    validation_history: list[float] = []
    best_state, best_epoch, best_value = copy.deepcopy(model.state_dict()), 0, -float("inf")
    stopped_early, step = False, 0
    start = time.perf_counter()
    bar = tqdm(range(epochs), disable=not progress, unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        model.train()
        order = torch.randperm(train_data.shape[0], generator=generator).to(device)
        total = torch.zeros((), dtype=dtype, device=device)
        for batch_index in order.split(batch_size):
            batch = train_data[batch_index]
            if binarize_train:
                batch = binarize(batch, generator)
            step += 1
            beta = min(1.0, step / warmup_steps) if warmup_steps else 1.0
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(batch, beta)
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
            optimizer.step()
            total += loss.detach() * batch.shape[0]
        train_value = float(total) / train_data.shape[0]
        if not math.isfinite(train_value):
            model.load_state_dict(best_state)
            result = VAEFitResult(
                np.array(train_history), np.array(validation_history), best_epoch, False, time.perf_counter() - start
            )
            raise TrainingDiverged(
                f"the VAE's loss became {train_value} in epoch {epoch + 1}; the best weights were restored", result
            )
        train_history.append(train_value)
        model.eval()
        if validation_data is None:
            best_epoch = epoch
            bar.set_postfix(loss=f"{train_value:.3f}", refresh=False)
            continue
        value = mean_elbo(model, validation_data, validation_samples)
        validation_history.append(value)
        if value > best_value:
            best_value, best_epoch, best_state = value, epoch, copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{train_value:.3f}", validation_elbo=f"{value:.3f}", refresh=False)
        # Patience counts from the end of the warm-up: the ELBO keeps falling while β still rises.
        if patience is not None and epoch - max(best_epoch, warmup_epochs - 1) >= patience:
            stopped_early = True
            break
    bar.close()
    if validation_data is not None:
        model.load_state_dict(best_state)
    return VAEFitResult(
        np.array(train_history), np.array(validation_history), best_epoch, stopped_early, time.perf_counter() - start
    )
