r"""A fitted model's ``log_prob`` or ``sample`` as a ``torch.export`` program (``.pt2``) or an ONNX file.

Two programs can be exported from a :class:`~flowforge.model.NormalizingFlow` or a
:class:`~flowforge.model.MultiscaleFlow`:

- ``method="log_prob"``: inputs ``x`` ``(batch, *event)`` and, for a conditional model, ``context``
  (``(batch, features)`` floats, one row per sample; class labels ``(batch,)`` int64 for a
  class-conditional base); output ``log q(x | c)`` ``(batch,)``.
- ``method="sample"``: inputs the base's **standard normal noise** ``noise`` ``(n, *base event)``
  (a multi-scale model takes one ``noise_<level>`` per level, level 0 first) and the context;
  outputs ``(x, log q(x | c))``. The program draws nothing: the noise is an input so that its results
  are reproducible and can be checked against the eager model (an ONNX runtime's random numbers
  differ from torch's). ``torch.randn(n, *base event)`` gives the model's own distribution; with
  the same generator state, the noise ``torch.randn`` makes is what ``model.sample(n)`` draws for a
  diagonal-Gaussian base (:meth:`~flowforge.distributions.DiagGaussian.from_noise`).

The first dimension is dynamic (``dynamic_batch=True``, the default): a program exported at one
batch size runs at any other. The programs trace the plain per-layer math, the layers' inverses
(density) or forwards (sampling) in turn, not the model's chunked no-grad evaluation, and contain no
data-dependent control flow; iterative parts with a fixed step count (Planar's bisection, the
autoregressive layers' D passes) are unrolled. What cannot be exported is refused before tracing by
:func:`check_exportable`, naming the layer and why: residual blocks (their log-determinant is an
autograd Jacobian or a series, and their inverse a fixed-point iteration that stops on a tolerance),
MCMC layers (random), an ActNorm not yet initialised, and for ``sample`` bases that are no map of
standard normal noise (mixtures, accept/reject, uniforms).

Files are written to a temporary name beside ``path`` and moved into place with :func:`os.replace`,
so a failed export leaves no file behind and never a partial one.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .distributions.base import BaseDistribution, ResampledGaussian
from .distributions.conditional import ClassCondDiagGaussian, ConditionalDiagGaussian
from .flows import HamiltonianMonteCarlo, MetropolisHastings, Residual, Whitening
from .flows.base import Flow
from .flows.linear import InvertibleMatrix
from .flows.normalization import ActNorm
from .model import MultiscaleFlow, NormalizingFlow, _underflow

__all__ = ["FORMATS", "METHODS", "check_exportable", "example_inputs", "export_model", "export_program", "io_names"]

METHODS = ("log_prob", "sample")
"""What can be exported: the density or the sampler (from given noise)."""
FORMATS = ("torch-export", "onnx")
"""File formats: a ``torch.export`` archive (``torch.export.save``; load with ``torch.export.load``) or ONNX."""

ExportableModel = NormalizingFlow | MultiscaleFlow


def _layers(model: ExportableModel) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, (Flow, BaseDistribution))]


def _bases(model: ExportableModel) -> list[BaseDistribution]:
    return [model.q0] if isinstance(model, NormalizingFlow) else [cast(BaseDistribution, b) for b in model.q0]


def check_exportable(model: nn.Module, method: str = "log_prob") -> None:
    """Raise ``TypeError`` (not a flowforge model), ``ValueError`` (an unknown ``method``) or
    :class:`NotImplementedError` naming the first part of ``model`` whose ``method`` cannot be
    exported, and why."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(model, (NormalizingFlow, MultiscaleFlow)):
        raise TypeError(f"export takes a NormalizingFlow or a MultiscaleFlow, got {type(model).__name__}")
    for name, module in _layers(model):
        where = f"layer {name} ({type(module).__name__})"
        if isinstance(module, Residual):
            raise NotImplementedError(
                f"{where} cannot be exported: its log-determinant is an autograd Jacobian (or a power series "
                "of vector-Jacobian products) and its inverse a fixed-point iteration that stops when a "
                "tolerance is met, a data-dependent loop"
            )
        if isinstance(module, (MetropolisHastings, HamiltonianMonteCarlo)):
            raise NotImplementedError(f"{where} cannot be exported: it draws random numbers inside the map")
        if isinstance(module, ActNorm) and module.couples_batch:
            raise NotImplementedError(
                f"{where} cannot be exported before it is initialised: its first batch sets its parameters"
            )
        if isinstance(module, ResampledGaussian):
            raise NotImplementedError(
                f"{where} cannot be exported: it samples by accept/reject (a data-dependent loop), and its "
                "density reads a lazily estimated normaliser"
            )
    for index, base in enumerate(_bases(model)):
        known = isinstance(base, (ClassCondDiagGaussian, ConditionalDiagGaussian))
        if base.takes_context and not known:
            raise NotImplementedError(
                f"the base {index} ({type(base).__name__}) cannot be exported: of the conditional bases, "
                "export knows ConditionalDiagGaussian and ClassCondDiagGaussian"
            )
        if method == "sample" and getattr(base, "temperature", None) is not None:
            raise NotImplementedError(
                f"the base {index} ({type(base).__name__}) has a temperature set, which its from_noise does "
                "not apply: set it to None to export the sampler"
            )
        if method == "sample":
            if not known and type(base).from_noise is BaseDistribution.from_noise:
                raise NotImplementedError(
                    f"the base {index} ({type(base).__name__}) cannot be exported for sampling: the exported "
                    "sampler takes standard normal noise, and this base is no map of it"
                )


def _gaussian(loc: torch.Tensor, log_scale: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z = μ + σ ε`` and ``log N(z; μ, σ²)`` for standard normal ``eps`` and per-row ``μ, log σ``."""
    log_q = -0.5 * eps[0].numel() * math.log(2 * math.pi) - log_scale.flatten(1).sum(1)
    return loc + torch.exp(log_scale) * eps, log_q - 0.5 * (eps * eps).flatten(1).sum(1)


def _triangular_inverse(lower: torch.Tensor) -> torch.Tensor:
    identity = torch.eye(lower.shape[0], dtype=lower.dtype, device=lower.device)
    return torch.linalg.solve_triangular(lower.detach(), identity, upper=False)


def _constant(value: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: value


@contextmanager
def _frozen_matrices(model: nn.Module) -> Iterator[None]:
    """Each :class:`~flowforge.flows.linear.InvertibleMatrix` of ``model`` returns its inverse formed now,
    a constant of the traced program, instead of forming it from its LU factors by triangular solves
    (which ONNX lacks); the same operations on the same weights, so the same values."""
    matrices = [module for module in model.modules() if isinstance(module, InvertibleMatrix)]
    try:
        for matrix in matrices:
            with torch.no_grad():
                frozen = matrix.inverse_matrix().detach()
            matrix.inverse_matrix = _constant(frozen)  # type: ignore[method-assign]
        yield
    finally:
        for matrix in matrices:
            matrix.__dict__.pop("inverse_matrix", None)


class _Program(nn.Module):
    """The plain math of one method of a model (no chunking, no argument checks that read values).

    ``context`` is what the base takes (labels for a class-conditional base), and the layers get the
    same floats or, for labels, one-hot rows."""

    context_mean: torch.Tensor | None
    context_std: torch.Tensor | None

    def __init__(
        self, model: ExportableModel, method: str, context_scaling: tuple[torch.Tensor, torch.Tensor] | None = None
    ):
        super().__init__()
        mean, std = (None, None) if context_scaling is None else (torch.as_tensor(v) for v in context_scaling)
        self.register_buffer("context_mean", mean)
        self.register_buffer("context_std", std)
        self.model, self.method = model, method
        self.bases = _bases(model)
        first = self.bases[0]
        self.classes = first.num_classes if isinstance(first, ClassCondDiagGaussian) else None
        self.conditional = bool(model.takes_context)
        self.whitening_inverses = {
            str(id(flow)): _triangular_inverse(flow.cholesky) for flow in model.modules() if isinstance(flow, Whitening)
        }

    def _contexts(self, context: torch.Tensor | None, like: torch.Tensor):
        if context is None:
            return None, None
        if self.classes is not None:
            one_hot = (context.unsqueeze(1) == torch.arange(self.classes, device=context.device)).to(like.dtype)
            return context, one_hot
        return context, context

    @staticmethod
    def _conditional_gaussian(base: BaseDistribution, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``μ(c), log σ(c)`` of a conditional Gaussian base, without the label checks that read values."""
        if isinstance(base, ClassCondDiagGaussian):
            return base.loc[context], base.log_scale[context]
        encoded = cast(ConditionalDiagGaussian, base).context_encoder(context)
        loc, log_scale = encoded.unflatten(1, (2, *base.shape)).unbind(1)
        return loc, log_scale

    def _base_log_prob(self, base: BaseDistribution, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if not base.takes_context:
            return base.log_prob(z)
        assert context is not None
        loc, log_scale = self._conditional_gaussian(base, context)
        return _gaussian(loc, log_scale, (z - loc) * torch.exp(-log_scale))[1]

    def _from_noise(self, base: BaseDistribution, eps: torch.Tensor, context: torch.Tensor | None):
        if not base.takes_context:
            return base.from_noise(eps)
        assert context is not None
        return _gaussian(*self._conditional_gaussian(base, context), eps)

    def _pull(self, flows: Sequence[Flow], x: torch.Tensor, context: torch.Tensor | None):
        log_det = x.new_zeros(x.shape[0])
        for flow in reversed(flows):
            if isinstance(flow, Whitening):
                x, part = self._whitened(flow, x)
            elif context is not None and flow.takes_context:
                x, part = cast(Any, flow).inverse(x, context)
            else:
                x, part = flow.inverse(x)
            log_det = log_det + part
        return x, log_det

    def _whitened(self, flow: Whitening, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`Whitening.inverse` as a product with the factor's inverse, formed once (ONNX has no
        triangular solve); equal to the solve to the rounding of the wider dtype."""
        inverse = self.whitening_inverses[str(id(flow))]
        mean = flow.mean.to(torch.promote_types(x.dtype, flow.mean.dtype))
        z = ((x.to(mean.dtype) - mean) @ inverse.to(mean.dtype).T).to(x.dtype)
        return z, -torch.log(torch.diagonal(flow.cholesky)).sum().to(x.dtype).expand(x.shape[0])

    @staticmethod
    def _push(flows: Sequence[Flow], z: torch.Tensor, context: torch.Tensor | None):
        log_det = z.new_zeros(z.shape[0])
        for flow in flows:
            z, part = flow(z, context) if context is not None and flow.takes_context else flow(z)
            log_det = log_det + part
        return z, log_det

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        base_context, layer_context = self._contexts(context, x)
        model = self.model
        if isinstance(model, NormalizingFlow):
            z, log_det = self._pull(model._layers, x, layer_context)
            return _underflow(self._base_log_prob(model.q0, z, base_context) + log_det, x)
        h, log_det = x, x.new_zeros(x.shape[0])
        if model.transform is not None:
            h, part = model.transform.inverse(h)
            log_det = log_det + part
        for level in reversed(range(model.num_levels)):
            h, part = self._pull(model._level(level), h, layer_context)
            log_det = log_det + part
            if level > 0:
                (h, factored), part = cast(Any, model._merge(level - 1)).inverse(h)
                log_det = log_det + part + self._base_log_prob(self.bases[level], factored, base_context)
        return _underflow(log_det + self._base_log_prob(self.bases[0], h, base_context), x)

    def sample(self, noise: Sequence[torch.Tensor], context: torch.Tensor | None = None):
        base_context, layer_context = self._contexts(context, noise[0])
        model = self.model
        parts = [self._from_noise(base, eps, base_context) for base, eps in zip(self.bases, noise, strict=True)]
        log_q = sum((log_q0 for _, log_q0 in parts), noise[0].new_zeros(noise[0].shape[0]))
        if isinstance(model, NormalizingFlow):
            x, log_det = self._push(model._layers, parts[0][0], layer_context)
            return x, log_q - log_det
        h, log_det = parts[0][0], noise[0].new_zeros(noise[0].shape[0])
        for level in range(model.num_levels):
            if level > 0:
                h, part = model._merge(level - 1)(cast(Any, [h, parts[level][0]]))
                log_det = log_det + part
            h, part = self._push(model._level(level), h, layer_context)
            log_det = log_det + part
        if model.transform is not None:
            h, part = model.transform(h)
            log_det = log_det + part
        return h, log_q - log_det

    def forward(self, *inputs: torch.Tensor):
        if self.conditional:
            *values, context = inputs
            if self.context_mean is not None and self.context_std is not None:
                scaled = (context.to(self.context_mean.dtype) - self.context_mean) / self.context_std
                context = scaled.to(context.dtype)
        else:
            values, context = list(inputs), None
        if self.method == "log_prob":
            return self.log_prob(values[0], context)
        return self.sample(values, context)


def _like(model: nn.Module) -> torch.Tensor:
    for parameter in model.parameters():
        return parameter
    floats = [buffer for buffer in model.buffers() if buffer.is_floating_point()]
    return floats[0] if floats else torch.empty(0)


def example_inputs(
    model: ExportableModel, method: str = "log_prob", batch_size: int = 4, context: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Inputs of the exported ``method`` for ``batch_size`` rows: standard normal noise (``sample``) or
    model samples made from it (``log_prob``), in the model's dtype and device, followed by ``context``
    (default for a conditional model: zeros, or label 0 for a class-conditional base)."""
    like = _like(model)
    noise = [torch.randn(batch_size, *base.shape, dtype=like.dtype, device=like.device) for base in _bases(model)]
    inputs: tuple[torch.Tensor, ...] = tuple(noise)
    if model.takes_context:
        if context is None:
            context = _default_context(model, batch_size, like)
        inputs = (*inputs, context)
    if method == "log_prob":
        with torch.no_grad():
            x = model.sample(batch_size, context)[0] if model.takes_context else model.sample(batch_size)[0]
        inputs = (x, *inputs[len(noise) :])
    return inputs


def _default_context(model: ExportableModel, rows: int, like: torch.Tensor) -> torch.Tensor:
    base = _bases(model)[0]
    if isinstance(base, ClassCondDiagGaussian):
        return torch.zeros(rows, dtype=torch.long, device=like.device)
    features = _context_features(model)
    return torch.zeros(rows, features, dtype=like.dtype, device=like.device)


def _context_features(model: ExportableModel) -> int:
    """The width of a conditional model's context, read from its conditioners' input layers."""
    for module in model.modules():
        for attribute in ("context_features", "context_size"):
            value = getattr(module, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
        encoder = getattr(module, "context_encoder", None)
        if encoder is not None:
            for layer in encoder.modules():
                if isinstance(layer, nn.Linear):
                    return layer.in_features
        context_layer = getattr(module, "context", None)
        if isinstance(context_layer, nn.Linear):
            return context_layer.in_features
    raise ValueError("cannot tell the width of this model's context: give an example context")


def io_names(model: ExportableModel, method: str) -> tuple[list[str], list[str]]:
    """The names of the exported ``method``'s inputs and outputs (see the module's docstring)."""
    levels = len(_bases(model))
    if method == "log_prob":
        inputs, outputs = ["x"], ["log_prob"]
    else:
        inputs = ["noise"] if levels == 1 else [f"noise_{level}" for level in range(levels)]
        outputs = ["x", "log_prob"]
    return inputs + (["context"] if model.takes_context else []), outputs


def export_program(
    model: ExportableModel,
    method: str = "log_prob",
    *,
    batch_size: int = 4,
    dynamic_batch: bool = True,
    context: torch.Tensor | None = None,
    context_scaling: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.export.ExportedProgram:
    """``model``'s ``method`` (``"log_prob"`` or ``"sample"``, see the module's docstring) as a
    :class:`torch.export.ExportedProgram`, traced at ``batch_size`` rows (with ``dynamic_batch``, the
    first dimension of every input is symbolic: any batch of 1 row or more runs). ``context``: an
    example context (by default zeros or label 0). ``context_scaling``: ``(mean, std)`` of a context
    the model takes standardised; the program then takes raw context values and standardises them,
    ``(c − mean)/std``, in the dtype of ``mean``. The model is put in evaluation mode.

    Raises :class:`NotImplementedError` for a model that cannot be exported (:func:`check_exportable`),
    or when ``torch.export`` fails on a layer, with the first line of its message."""
    check_exportable(model, method)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an int of at least 2 (a dimension of 1 is specialised), got {batch_size}")
    model.eval()
    if context_scaling is not None and not model.takes_context:
        raise ValueError("context_scaling applies to conditional models; this model takes no context")
    inputs = example_inputs(model, method, batch_size, context)
    program = _Program(model, method, context_scaling)
    shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        shapes = (tuple({0: batch} for _ in inputs),)  # one entry: forward takes *inputs
    try:
        with torch.no_grad(), _frozen_matrices(model):
            return torch.export.export(program, inputs, dynamic_shapes=shapes)
    except Exception as error:  # torch raises many kinds; say which method failed and why
        raise NotImplementedError(f"torch.export could not trace {method} of this model: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    """One line of an exporter's error: the line of its summary that names the failing operation, else its first."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if line.startswith("<class ")]
    return (named or lines or [type(error).__name__])[0]


@contextmanager
def _replacing(path: Path):
    """A temporary path beside ``path``, moved onto it when the block succeeds and removed otherwise."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def export_model(
    model: ExportableModel,
    path: str | os.PathLike,
    *,
    method: str = "log_prob",
    format: str = "torch-export",  # noqa: A002 - the name torch.onnx and the command use
    batch_size: int = 4,
    dynamic_batch: bool = True,
    context: torch.Tensor | None = None,
    context_scaling: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Path:
    """Write ``model``'s ``method`` to ``path`` as ``format`` (``"torch-export"``: a ``.pt2`` archive
    for :func:`torch.export.load`; ``"onnx"``: one ONNX file, weights inside) and return the path.

    Inputs and outputs are named: ``x`` (``log_prob``) or ``noise`` / ``noise_<level>`` (``sample``),
    then ``context`` for a conditional model; outputs ``log_prob``, or ``x`` and ``log_prob``. See
    :func:`export_program` for the other arguments. The file is written under a temporary name and
    moved into place, so a failure leaves ``path`` as it was."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "onnx":
        _require_onnx()
    exported = export_program(
        model,
        method,
        batch_size=batch_size,
        dynamic_batch=dynamic_batch,
        context=context,
        context_scaling=context_scaling,
    )
    path = Path(path)
    with _replacing(path) as temporary:
        if format == "torch-export":
            with warnings.catch_warnings():  # said of weights that share storage, which are on the CPU here
                warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
                torch.export.save(exported, temporary)
        else:
            _write_onnx(exported, temporary, *io_names(model, method))
    return path


def _require_onnx() -> None:
    """Raise ImportError naming the extra when torch.onnx's exporter lacks its packages."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {' and '.join(missing)}: install flowforge's onnx extra (pip install 'flowforge[onnx]')"
        )


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hold back the ONNX exporter's notices that concern no flowforge model: torchvision's operators it
    skips (a logging warning per operator) and torch's own deprecations inside it."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def _write_onnx(exported: torch.export.ExportedProgram, path: Path, inputs: list[str], outputs: list[str]) -> None:
    try:
        with _quiet_exporter():
            onnx_program = torch.onnx.export(
                exported, (), input_names=inputs, output_names=outputs, dynamo=True, external_data=False, verbose=False
            )
    except Exception as error:  # the exporter raises its own error types
        raise NotImplementedError(f"torch.onnx could not convert the program: {_reason(error)}") from error
    if onnx_program is None:
        raise NotImplementedError("torch.onnx returned no program")
    onnx_program.save(str(path))
