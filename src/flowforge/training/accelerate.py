"""Faster training steps, kept apart from the loops: every use of a private torch API and every
compiler setting of flowforge lives here.

A step of a small flow (the seed's 16 Planar layers on 40 samples) is a few hundred tiny
operations, so its cost is per-operation overhead: Python, the dispatcher, the autograd engine,
one optimizer kernel per parameter. Two ways to run it, computing the same update:

- :class:`EagerStep`: ``loss.backward()`` and ``optimizer.step()``, any optimizer; optionally with
  the loss compiled by ``torch.compile`` (its backward is compiled too). Public torch API only.
- :class:`FusedAdamStep`: loss, gradient (``torch.func.grad_and_value``) and the Adam update of all
  trainable parameters, viewed as one flat vector, traced into a single ``torch.compile`` graph:
  one compiled call per step, no autograd engine, no per-parameter optimizer work. It uses
  PyTorch's own Adam arithmetic (``torch.optim.adam.adam``), so the update is the one
  ``torch.optim.Adam(lr, weight_decay)`` makes, to rounding.

Both keep their optimizer state in tensors that ``state`` / ``load`` snapshot and restore (used to
roll back a diverged run), and :meth:`FusedAdamStep.from_eager` takes over an eager Adam's state
mid-run. A compiled step on the CPU first starts :func:`probe_cpu_vector_isa` in a background
thread, so that inductor's check of the CPU's vector instruction sets runs beside the tracing.

Private names (:data:`PRIVATE_NAMES`) are looked up by :func:`private`, each in one place, when a
step is built: where this torch lacks one, :meth:`FusedAdamStep.supports` says no (the loop then
runs an :class:`EagerStep`), the probe does nothing and the compiler keeps its default options.

The ``"auto"`` compile policy (:func:`compile_pays`) times a few eager steps and compiles the rest
of the run when running it eagerly would take longer than :data:`AUTO_COMPILE_PAYOFF_SECONDS`.
Measured compile costs and speed-ups are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

COMPILE_MODES = ("auto", "on", "off")
"""``compile=`` of :func:`flowforge.training.fit`: compile after timing (``"auto"``), always, never."""
AUTO_PROBE_WARMUP = 5
AUTO_PROBE_STEPS = 25
"""``"auto"`` times eager steps ``AUTO_PROBE_WARMUP`` to ``AUTO_PROBE_STEPS`` (the first steps pay for
allocations and caches) and then decides, once."""
AUTO_COMPILE_PAYOFF_SECONDS = 30.0
"""``"auto"`` compiles when the rest of the run would take longer than this eagerly: a bound on the cost
of a cold compilation (no kernels in inductor's on-disk cache), so that a run past it ends sooner
compiled even on a fresh machine."""
TINY_STEP_ELEMENTS = 4096
"""A CPU step whose parameters and samples both number at most this many elements compiles without
inductor's precompiled header: building the header costs more than it saves on a handful of tiny
kernels, and the kernels are the same. (Scalar kernels, ``cpp.simdlen=1``, would compile faster still
but change the float rounding, which moves a seeded fit to a different result, so they are not used.)"""
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
RECOMPILE_LIMIT = 64
"""Graphs dynamo keeps per compiled function: every model structure adds one to the same fused
update, and past dynamo's default a session fitting many models would silently run uncompiled."""

PRIVATE_NAMES = {
    "adam": ("torch.optim.adam", "adam"),
    "dynamo_config": ("torch._dynamo", "config"),
    "inductor_config": ("torch._inductor", "config"),
    "pick_vec_isa": ("torch._inductor.cpu_vec_isa", "pick_vec_isa"),
}
"""Every private torch name flowforge uses, as ``(module, attribute)``, looked up by :func:`private`."""

Objective = Callable[[nn.Module, Any], torch.Tensor]
"""``objective(model, value) -> scalar loss``; ``value`` is the step's input (β, a batch, or a batch
and its contexts)."""


def private(key: str) -> Any | None:
    """The private torch name ``PRIVATE_NAMES[key]``, or None where this torch does not have it."""
    module_name, attribute = PRIVATE_NAMES[key]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, attribute, None)


def _config_has(config: Any, option: str) -> bool:
    """Whether a torch config module exists and knows ``option``."""
    return config is not None and hasattr(config, option)


def fusable_here() -> bool:
    """Whether this torch has what :class:`FusedAdamStep` uses: the functional Adam update and
    dynamo's ``recompile_limit``."""
    return private("adam") is not None and _config_has(private("dynamo_config"), "recompile_limit")


_isa_probe: threading.Thread | None = None


def probe_cpu_vector_isa(device: torch.device) -> threading.Thread | None:
    """Start inductor's check of which vector instruction sets (AVX2, AVX-512, AMX ...) the CPU and
    the C++ compiler support, in a background thread, once per process; return the thread.

    The check builds and loads a small C++ library for each candidate set, which inductor otherwise
    does in line, in the middle of the first compilation. Its answer is cached in the process, so
    running it here, while dynamo and AOTAutograd trace the step on the main thread, takes the
    compiler runs off the critical path. The answer is the one inductor would find itself: the same
    function, in the same process. Nothing is started for other devices, or where this torch has no
    such check.
    """
    global _isa_probe
    if device.type != "cpu" or _isa_probe is not None:
        return _isa_probe
    # Both looked up here, on the calling thread: torch's modules imported from two threads at once
    # can deadlock on their import locks, and tracing on this thread imports dynamo.
    if private("dynamo_config") is None:
        return None
    pick_vec_isa = private("pick_vec_isa")
    if pick_vec_isa is None:
        return None

    def probe() -> None:
        # A failure here is inductor's to report when it compiles.
        with contextlib.suppress(Exception):
            pick_vec_isa()

    _isa_probe = threading.Thread(target=probe, name="flowforge-cpu-isa-probe", daemon=True)
    _isa_probe.start()
    return _isa_probe


def inductor_options(model: nn.Module, samples_per_step: int, device: torch.device) -> dict | None:
    """Inductor options for the fused step: no precompiled header for tiny CPU steps (see
    :data:`TINY_STEP_ELEMENTS`), else the defaults (also where this torch lacks the option)."""
    shape = getattr(getattr(model, "q0", None), "shape", None)
    if device.type != "cpu" or not isinstance(shape, tuple):
        return None
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tiny = parameters <= TINY_STEP_ELEMENTS and samples_per_step * math.prod(shape) <= TINY_STEP_ELEMENTS
    if not tiny or not _config_has(private("inductor_config"), "cpp_cache_precompile_headers"):
        return None
    return {"cpp_cache_precompile_headers": False}


def compile_pays(probe_seconds: float, remaining_steps: int) -> bool:
    """The ``"auto"`` decision: whether ``remaining_steps`` eager steps, at the mean time of the timed
    probe steps (``probe_seconds`` in all), would take longer than :data:`AUTO_COMPILE_PAYOFF_SECONDS`."""
    per_step = probe_seconds / (AUTO_PROBE_STEPS - AUTO_PROBE_WARMUP)
    return per_step * remaining_steps > AUTO_COMPILE_PAYOFF_SECONDS


class EagerStep:
    """``zero_grad``, ``objective(model, value).backward()``, ``optimizer.step()``.

    With ``compiled=True`` the objective is wrapped in ``torch.compile`` (graph of the loss and,
    through AOTAutograd, of its backward); the optimizer step stays eager.
    """

    fused = False

    def __init__(
        self, model: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer, compiled: bool = False
    ):
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.compiled = compiled
        first = next(model.parameters(), None) if compiled else None
        if first is not None:
            probe_cpu_vector_isa(first.device)
        self._loss = torch.compile(objective, fullgraph=True, dynamic=False) if compiled else objective

    def __call__(self, value: Any) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self.model, value)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def state(self) -> dict:
        return copy.deepcopy(self.optimizer.state_dict())

    def load(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class _Objective(nn.Module):
    """The loss as a module, so that ``torch.func.functional_call`` can substitute parameters."""

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, value: Any) -> torch.Tensor:
        return self.objective(self.model, value)


class FusedAdamStep:
    """Loss, gradient and Adam update as one compiled function of the flat parameter vector.

    Needs every trainable parameter on one device with one floating dtype, and a torch with the
    private names it uses (see :meth:`supports`). ``lr`` and ``weight_decay`` mean what they mean for
    ``torch.optim.Adam`` (L2 penalty added to the gradient), with its default betas and eps.
    """

    fused = True
    compiled = True

    def __init__(
        self, model: nn.Module, objective: Objective, lr: float, weight_decay: float, options: dict | None = None
    ):
        adam_update, dynamo_config = private("adam"), private("dynamo_config")
        if adam_update is None or not _config_has(dynamo_config, "recompile_limit"):
            raise RuntimeError("this torch lacks torch.optim.adam.adam or dynamo's recompile_limit")
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.model, self.objective = model, objective
        self.lr, self.weight_decay = lr, weight_decay
        self._adam: Callable[..., None] = adam_update
        self._dynamo_config: Any = dynamo_config
        self._module = _Objective(model, objective)
        self._names = [f"model.{name}" for name, _ in named]
        # Detached aliases: the compiled step writes the new values into the parameters' storage.
        self._leaves = [p.detach() for _, p in named]
        self._sizes = [p.numel() for p in self._leaves]
        like = self._leaves[0]
        total = sum(self._sizes)
        self.exp_avg = like.new_zeros(total)
        self.exp_avg_sq = like.new_zeros(total)
        self.step_count = torch.zeros((), dtype=torch.float32, device=like.device)
        self._capturable = like.device.type != "cpu"
        probe_cpu_vector_isa(like.device)
        self._step = torch.compile(self._update, fullgraph=True, dynamic=False, options=options)
        self._traced = False

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether all trainable parameters share one device and one floating dtype, and this torch
        has the functional Adam update and dynamo's ``recompile_limit``."""
        kinds = {(p.device, p.dtype) for p in model.parameters() if p.requires_grad}
        return len(kinds) == 1 and next(iter(kinds))[1].is_floating_point and fusable_here()

    @classmethod
    def from_eager(cls, eager: EagerStep, lr: float, weight_decay: float, options: dict | None = None) -> FusedAdamStep:
        """A fused step that continues ``eager``'s Adam run (moments and step count carried over)."""
        fused = cls(eager.model, eager.objective, lr, weight_decay, options)
        parameters = [p for p in eager.model.parameters() if p.requires_grad]
        states = [eager.optimizer.state.get(p, {}) for p in parameters]
        if all("exp_avg" in state for state in states):
            fused.exp_avg.copy_(torch.cat([state["exp_avg"].reshape(-1) for state in states]))
            fused.exp_avg_sq.copy_(torch.cat([state["exp_avg_sq"].reshape(-1) for state in states]))
            fused.step_count.fill_(float(states[0]["step"]))
        return fused

    def _flat_loss(self, flat: torch.Tensor, value: Any) -> torch.Tensor:
        parts = flat.split(self._sizes)
        parameters = {
            name: part.view_as(leaf) for name, part, leaf in zip(self._names, parts, self._leaves, strict=True)
        }
        return torch.func.functional_call(self._module, parameters, (value,), strict=False)

    def _update(self, value: Any) -> torch.Tensor:
        flat = torch.cat([leaf.reshape(-1) for leaf in self._leaves])
        gradient, loss = torch.func.grad_and_value(self._flat_loss)(flat, value)
        with torch.no_grad():
            self._adam(
                [flat], [gradient], [self.exp_avg], [self.exp_avg_sq], [], [self.step_count],
                foreach=False, capturable=self._capturable, amsgrad=False, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1],
                lr=self.lr, weight_decay=self.weight_decay, eps=ADAM_EPS, maximize=False,
            )  # fmt: skip
            for leaf, part in zip(self._leaves, flat.split(self._sizes), strict=True):
                leaf.copy_(part.view_as(leaf))
        return loss

    def __call__(self, value: Any) -> torch.Tensor:
        if self._traced:
            return self._step(value)
        with self._dynamo_config.patch(recompile_limit=RECOMPILE_LIMIT):
            loss = self._step(value)
        self._traced = True
        return loss

    def state(self) -> tuple[torch.Tensor, ...]:
        return self.exp_avg.clone(), self.exp_avg_sq.clone(), self.step_count.clone()

    def load(self, state: tuple[torch.Tensor, ...]) -> None:
        for mine, saved in zip((self.exp_avg, self.exp_avg_sq, self.step_count), state, strict=True):
            mine.copy_(saved)

    def adam_state_dict(self, state: tuple[torch.Tensor, ...], optimizer: torch.optim.Optimizer) -> dict:
        """``state`` (from :meth:`state`) as the ``state_dict()`` of ``optimizer``, a ``torch.optim.Adam``
        over the same parameters in one group: the moments split per parameter, the step count each."""
        exp_avg, exp_avg_sq, step_count = state
        groups = optimizer.state_dict()["param_groups"]
        per_parameter = zip(exp_avg.split(self._sizes), exp_avg_sq.split(self._sizes), self._leaves, strict=True)
        return {
            "state": {
                index: {"step": step_count.clone(), "exp_avg": first.view_as(leaf).clone(),
                        "exp_avg_sq": second.view_as(leaf).clone()}
                for index, (first, second, leaf) in enumerate(per_parameter)
            },
            "param_groups": groups,
        }  # fmt: skip


Step = EagerStep | FusedAdamStep


def optimizer_state_dict(stepper: Step, state: Any, eager: EagerStep) -> dict:
    """``state`` (what ``stepper.state()`` returned) as the ``state_dict()`` of ``eager``'s optimizer, the
    one form a training state keeps whichever step ran; :meth:`FusedAdamStep.from_eager` takes it back."""
    if isinstance(stepper, FusedAdamStep):
        return stepper.adam_state_dict(state, eager.optimizer)
    return state


def compiled_step(eager: EagerStep, fusable: bool, lr: float, weight_decay: float, samples_per_step: int) -> Step:
    """The compiled form of ``eager``'s step: the fused Adam step when the loop allows it (``fusable``:
    the default Adam, a loss that keeps ``requires_grad`` as it is) and this torch and model support
    it, else ``eager``'s objective compiled with its own optimizer."""
    if fusable and FusedAdamStep.supports(eager.model):
        device = next(p for p in eager.model.parameters() if p.requires_grad).device
        options = inductor_options(eager.model, samples_per_step, device)
        return FusedAdamStep.from_eager(eager, lr, weight_decay, options)
    return EagerStep(eager.model, eager.objective, eager.optimizer, compiled=True)


def first_compiled_call(stepper: Step, eager: EagerStep, value: Any) -> tuple[torch.Tensor, float, Step]:
    """Run the first call of a compiled step, timing its compilation; on failure warn and go on with
    ``eager``. Returns the loss, the compile time and the step to use from now on."""
    start = time.perf_counter()
    try:
        loss_value = stepper(value)
        return loss_value, time.perf_counter() - start, stepper
    except Exception as error:  # inductor raises many types (missing compiler, unsupported op)
        warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); training eagerly", stacklevel=3)
        return eager(value), 0.0, eager
