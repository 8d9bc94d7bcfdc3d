"""How one optimisation step of :func:`flowforge.train.fit` runs.

A step of a small flow (the seed's 16 Planar layers on 40 samples) is a few hundred tiny
operations, so its cost is per-operation overhead: Python, the dispatcher, the autograd
engine, one optimizer kernel per parameter. Three ways to run it, all computing the same
update:

- :class:`EagerStep`: ``loss.backward()`` and ``optimizer.step()``, any optimizer;
  optionally with the loss compiled by ``torch.compile`` (its backward is compiled too).
- :class:`FusedAdamStep`: loss, gradient (``torch.func.grad_and_value``) and the Adam
  update of all trainable parameters, viewed as one flat vector, traced into a single
  ``torch.compile`` graph: one compiled call per step, no autograd engine, no per-parameter
  optimizer work. It uses PyTorch's own Adam arithmetic (``torch.optim.adam.adam``), so the
  update is the one ``torch.optim.Adam(lr, weight_decay)`` makes, to rounding.

Both keep their optimizer state in tensors that :meth:`state` / :meth:`load` snapshot and
restore (used to roll back a diverged run), and :meth:`FusedAdamStep.from_eager` takes over
an eager Adam's state mid-run.

A compiled step on the CPU first starts :func:`probe_cpu_vector_isa` in a background thread, so
that inductor's check of the CPU's vector instruction sets runs beside the tracing.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.adam import adam as adam_update

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
RECOMPILE_LIMIT = 64

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""``objective(model, value) -> scalar loss``; ``value`` is the step's input (β or a batch)."""


_isa_probe: threading.Thread | None = None


def probe_cpu_vector_isa(device: torch.device) -> threading.Thread | None:
    """Start inductor's check of which vector instruction sets (AVX2, AVX-512, AMX ...) the CPU and
    the C++ compiler support, in a background thread, once per process; return the thread.

    The check builds and loads a small C++ library for each candidate set. On a fresh machine
    (empty kernel cache) it takes 2–8 s of compiler runs, which inductor does in line, in the
    middle of the first compilation. Its answer is cached in the process, so running it here,
    while dynamo and AOTAutograd trace the step on the main thread, takes it off the critical
    path. The answer is the one inductor would find itself: the same function, in the same process.
    Nothing is started for other devices, or where this torch has no such check.
    """
    global _isa_probe
    if device.type != "cpu" or _isa_probe is not None:
        return _isa_probe
    try:
        # Imported here, on the calling thread: torch's modules imported from two threads at once
        # can deadlock on their import locks.
        import torch._dynamo  # noqa: F401
        from torch._inductor import cpu_vec_isa
    except ImportError:
        return None

    def probe() -> None:
        # A failure here is inductor's to report when it compiles.
        with contextlib.suppress(Exception):
            cpu_vec_isa.pick_vec_isa()

    _isa_probe = threading.Thread(target=probe, name="flowforge-cpu-isa-probe", daemon=True)
    _isa_probe.start()
    return _isa_probe


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

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
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

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return self.objective(self.model, value)


class FusedAdamStep:
    """Loss, gradient and Adam update as one compiled function of the flat parameter vector.

    Needs every trainable parameter on one device with one floating dtype (see
    :meth:`supports`). ``lr`` and ``weight_decay`` mean what they mean for ``torch.optim.Adam``
    (L2 penalty added to the gradient), with its default betas and eps.
    """

    fused = True
    compiled = True

    def __init__(
        self, model: nn.Module, objective: Objective, lr: float, weight_decay: float, options: dict | None = None
    ):
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.model, self.objective = model, objective
        self.lr, self.weight_decay = lr, weight_decay
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
        """Whether all trainable parameters share one device and one floating dtype."""
        kinds = {(p.device, p.dtype) for p in model.parameters() if p.requires_grad}
        return len(kinds) == 1 and next(iter(kinds))[1].is_floating_point

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

    def _flat_loss(self, flat: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        parts = flat.split(self._sizes)
        parameters = {
            name: part.view_as(leaf) for name, part, leaf in zip(self._names, parts, self._leaves, strict=True)
        }
        return torch.func.functional_call(self._module, parameters, (value,), strict=False)

    def _update(self, value: torch.Tensor) -> torch.Tensor:
        flat = torch.cat([leaf.reshape(-1) for leaf in self._leaves])
        gradient, loss = torch.func.grad_and_value(self._flat_loss)(flat, value)
        with torch.no_grad():
            adam_update(
                [flat], [gradient], [self.exp_avg], [self.exp_avg_sq], [], [self.step_count],
                foreach=False, capturable=self._capturable, amsgrad=False, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1],
                lr=self.lr, weight_decay=self.weight_decay, eps=ADAM_EPS, maximize=False,
            )  # fmt: skip
            for leaf, part in zip(self._leaves, flat.split(self._sizes), strict=True):
                leaf.copy_(part.view_as(leaf))
        return loss

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        if self._traced:
            return self._step(value)
        # Every model structure adds a graph to the same function; past dynamo's default of 8 it
        # would silently run the uncompiled function, so a session fitting many models needs more.
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            loss = self._step(value)
        self._traced = True
        return loss

    def state(self) -> tuple[torch.Tensor, ...]:
        return self.exp_avg.clone(), self.exp_avg_sq.clone(), self.step_count.clone()

    def load(self, state: tuple[torch.Tensor, ...]) -> None:
        for mine, saved in zip((self.exp_avg, self.exp_avg_sq, self.step_count), state, strict=True):
            mine.copy_(saved)
