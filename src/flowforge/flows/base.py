"""Base classes every flow layer derives from, and the two generic combinators.

Direction convention (docs/design.md): ``forward`` is the sampling direction,
``forward(z) -> (x, log|det dx/dz|)`` and ``inverse(x) -> (z, log|det dz/dx|)``;
log-determinants have shape ``(batch,)``.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Sequence
from math import prod
from typing import Any, cast

import torch
from torch import nn


def as_event_shape(shape: int | Iterable[int]) -> tuple[int, ...]:
    """Normalise an int or an iterable of ints to an event-shape tuple of positive ints."""
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"expected a non-empty event shape of positive sizes, got {shape}")
    return shape


def check_event_shape(owner: object, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Raise ValueError, naming ``owner``'s class and both shapes, unless ``x.shape == (batch, *shape)``."""
    if x.shape[1:] != shape:
        expected = ", ".join(map(str, shape))
        raise ValueError(f"{type(owner).__name__} expects input of shape (batch, {expected}), got {tuple(x.shape)}")


def check_context(owner: object, context: torch.Tensor | None, rows: int, features: int) -> None:
    """Raise ValueError, naming ``owner``'s class, unless ``context`` has shape ``(rows, features)``."""
    if context is None or context.shape != (rows, features):
        got = None if context is None else tuple(context.shape)
        raise ValueError(f"{type(owner).__name__} expects a context of shape ({rows}, {features}), got {got}")


def _with_context(flow: Flow, method, values, context: torch.Tensor | None):
    """Call ``method`` (``flow``'s forward or inverse) with the context when there is one and the layer
    declares that it takes one (:attr:`Flow.takes_context`)."""
    if context is not None and flow.takes_context:
        return method(values, context)
    return method(values)


# Without gradients, large CPU batches run in pieces of this many rows: the intermediates (rows ×
# hidden width) then stay in cache and in reused heap memory instead of fresh pages. At 10^5
# points a 64-D MAF or NSF evaluates its density a third faster, and a 2-D coupling flow draws
# and evaluates 2^20 points four times faster. Results are the same row by row.
CHUNK_ROWS = 8192


def couples_batch(flows: Iterable[nn.Module]) -> bool:
    """Whether some layer's output for one row depends on the other rows of the batch (ActNorm
    before its data-dependent initialisation, BatchNorm in training mode)."""
    return any(getattr(module, "couples_batch", False) for flow in flows for module in flow.modules())


def _in_chunks(apply, flows: Sequence[Flow], values: torch.Tensor, context: torch.Tensor | None):
    """``apply(values, context)``, split along the batch when that changes nothing but speed: no
    autograd graph to keep, CPU tensors, a batch of several chunks, no layer that couples rows, and
    not while ``torch.compile`` or ``torch.export`` traces (a symbolic batch size cannot be compared
    with the chunk size without fixing it)."""
    rows = CHUNK_ROWS
    if (
        torch.is_grad_enabled()
        or torch.compiler.is_compiling()
        or values.device.type != "cpu"
        or values.shape[0] < 2 * rows
        or (context is not None and (context.dim() == 0 or context.shape[0] != values.shape[0]))
        or couples_batch(flows)
    ):
        return apply(values, context)
    contexts = context.split(rows) if context is not None else [None] * -(-values.shape[0] // rows)
    key = (tuple(id(flow) for flow in flows), tuple(values.shape[1:]), values.dtype, rows)
    pieces = _apply_each(apply, list(zip(values.split(rows), contexts, strict=True)), key)
    return torch.cat([piece[0] for piece in pieces]), torch.cat([piece[1] for piece in pieces])


RETIME_EVERY = 16
"""A thread choice of :func:`_apply_each` is reused for this many calls with the same key, then re-timed."""

_CHUNK_THREADS: dict[tuple, list[int]] = {}  # key -> [thread count chosen, calls that used it]


def _apply_each(apply, parts: list[tuple[torch.Tensor, torch.Tensor | None]], key: tuple = ()) -> list[Any]:
    """``apply`` to each ``(values, context)`` part, with the CPU thread count chosen by timing: with
    four parts or more and several threads, the second part runs on one thread and the third on
    torch's setting, and the rest on the faster of the two (torch's setting is restored after). The
    choice is kept for the next :data:`RETIME_EVERY` calls with the same ``key`` (the layers, the row
    shape, the chunk size), which then run every part on it, and is timed again after them.

    Why: on 2 cores beside one busy process, parallel kernels lose several times what they gain on
    a quiet machine (``python -m benchmarks.run --only ar64``: a 64-D MAF's density at 10^5 rows ran
    at 0.57x zuko's there and at 0.98x on the quiet machine); timing one part of each kind now and
    then costs little and follows the load the machine has."""
    threads = torch.get_num_threads()
    if threads == 1 or len(parts) < 4:
        return [apply(*part) for part in parts]
    key = (*key, threads)
    known = _CHUNK_THREADS.get(key)
    try:
        if known is not None and known[1] < RETIME_EVERY:
            known[1] += 1
            torch.set_num_threads(known[0])
            return [apply(*part) for part in parts]
        pieces = [apply(*parts[0])]  # untimed: the first part warms the caches and the allocator
        seconds: dict[int, float] = {}
        for count, part in zip((1, threads), parts[1:3], strict=True):
            torch.set_num_threads(count)
            start = time.perf_counter()
            pieces.append(apply(*part))
            seconds[count] = time.perf_counter() - start
        chosen = min(seconds, key=seconds.__getitem__)
        if len(_CHUNK_THREADS) > 256:  # keys hold layer ids: forget old models' entries now and then
            _CHUNK_THREADS.clear()
        _CHUNK_THREADS[key] = [chosen, 1]
        torch.set_num_threads(chosen)
        return pieces + [apply(*part) for part in parts[3:]]
    finally:
        torch.set_num_threads(threads)


def _stacks(flows: Sequence[Flow]) -> list[list[Flow]]:
    """``flows`` cut into runs that are pushed forward together (:meth:`Flow.stack_key`); every layer is
    a run of its own while ``torch.compile`` traces (the compiled graph fuses the layers anyway)."""
    runs: list[list[Flow]] = []
    keys: list[Hashable | None] = []
    compiling = torch.compiler.is_compiling()
    for flow in flows:
        key = None if compiling or not isinstance(flow, Flow) else flow.stack_key()
        if key is not None and keys and keys[-1] == key:
            runs[-1].append(flow)
        else:
            runs.append([flow])
            keys.append(key)
    return runs


def push_forward(
    flows: Iterable[Flow], z: torch.Tensor, context: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``flows`` in order (passing ``context`` to the layers that take one); return the result
    and the summed forward log-determinants."""
    flows = tuple(flows)
    runs = _stacks(flows)

    def apply(z: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = z.new_zeros(z.shape[0])
        for run in runs:
            if len(run) > 1:
                z, layer_log_det = cast(Any, type(run[0])).forward_stack(run, z)
            else:
                z, layer_log_det = _with_context(run[0], run[0], z, context)
            log_det = log_det + layer_log_det
        return z, log_det

    return _in_chunks(apply, flows, z, context)


def pull_back(
    flows: Sequence[Flow], x: torch.Tensor, context: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the inverses of ``flows`` in reverse order (passing ``context`` to the layers that take
    one); return the result and the summed log-determinants."""
    flows = tuple(flows)

    def apply(x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = x.new_zeros(x.shape[0])
        for flow in reversed(flows):
            x, layer_log_det = _with_context(flow, flow.inverse, x, context)
            log_det = log_det + layer_log_det
        return x, log_det

    return _in_chunks(apply, flows, x, context)


def check_shared_event_shape(owner: object, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Like :func:`check_event_shape`, but a size of 1 in ``shape`` is a parameter shared along that axis."""
    if x.dim() != len(shape) + 1 or any(p not in (1, n) for p, n in zip(shape, x.shape[1:], strict=True)):
        expected = ", ".join(map(str, shape))
        raise ValueError(
            f"{type(owner).__name__} with parameter shape {shape} expects input of shape (batch, {expected}) "
            f"(sizes of 1 are shared), got {tuple(x.shape)}"
        )


class Flow(nn.Module):
    """An invertible map with a tractable log-determinant.

    Subclasses implement ``forward`` (base -> data, the sampling direction) and
    ``inverse`` (data -> base); both return the transformed tensor and the
    log-absolute-determinant of their own Jacobian, of shape ``(batch,)``.

    Conditional layers declare ``takes_context = True`` (as a class attribute, or per instance when
    the layer is conditional only if built with ``context_features``) and take an optional second
    argument ``context`` of shape ``(batch, context_features)`` in both directions; the models pass
    it to those layers only.
    """

    takes_context: bool = False

    def stack_key(self) -> Hashable | None:
        """Layers that return the same key (not None), one after another, may be pushed forward
        together by their class's ``forward_stack(layers, z)`` (a static method returning what
        applying them in turn returns, to rounding): fewer, larger operations for eager loops.
        None (the default): this layer is applied alone."""
        return None

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class EventFlow(Flow):
    """A flow acting on a fixed event shape, with the input check all such layers share."""

    def __init__(self, shape: int | Iterable[int]):
        super().__init__()
        self.shape = as_event_shape(shape)
        self.dim = prod(self.shape)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is a batch of events of this layer's shape."""
        check_event_shape(self, x, self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Composite(Flow):
    """The composition ``f_K ∘ … ∘ f_1`` of a sequence of flows, itself a flow.

    ``forward`` applies the flows in order and sums their log-determinants;
    ``inverse`` applies their inverses in reverse order. The cheap direction is
    whatever its members' cheap directions are. It takes a context when a member does, and passes
    it on to the members that take one.
    """

    def __init__(self, flows: Iterable[Flow]):
        super().__init__()
        self.flows = nn.ModuleList(flows)

    def _layers(self) -> Sequence[Flow]:
        return cast("Sequence[Flow]", self.flows)  # built from Flows only

    @property
    def takes_context(self) -> bool:  # type: ignore[override]
        return any(flow.takes_context for flow in self._layers())

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return push_forward(self._layers(), z, context)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return pull_back(self._layers(), x, context)


class Reverse(Flow):
    """The inverse of a flow as a flow: ``Reverse(f).forward = f.inverse`` and vice versa.

    Useful to turn a layer whose cheap direction is density evaluation into one
    whose cheap direction is sampling (e.g. MAF into IAF). Takes a context when ``flow`` does.
    """

    def __init__(self, flow: Flow):
        super().__init__()
        self.flow = flow

    @property
    def takes_context(self) -> bool:  # type: ignore[override]
        return self.flow.takes_context

    def forward(self, z: torch.Tensor, *context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.inverse(z, *context)

    def inverse(self, x: torch.Tensor, *context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow(x, *context)
