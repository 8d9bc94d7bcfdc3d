"""normflows' ``nf.distributions.base`` path: its base distributions on flowforge's.

``BaseDistribution`` is flowforge's with normflows' ``sample(num_samples, **kwargs)``; every base here
derives from it. ``DiagGaussian``, ``Uniform``, ``ConditionalDiagGaussian``, ``ClassCondDiagGaussian``
and ``GaussianMixture`` are thin subclasses of the native classes that add normflows' call forms
(an ignored ``context``, a context or labels passed on by ``sample``, the ``temperature``
attribute of annealed sampling, the number of samples taken from the labels) and normflows'
``state_dict`` layout. ``UniformGaussian``, ``GlowBase``, ``AffineGaussian`` and ``GaussianPCA`` exist
only in normflows and are small classes of their own here, with normflows' parameter names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ....distributions import base as _native
from ....distributions.base import DiagGaussian as _NativeDiagGaussian
from ....distributions.base import GaussianMixture as _NativeGaussianMixture
from ....distributions.base import Uniform as _NativeUniform
from ....distributions.conditional import ClassCondDiagGaussian as _NativeClassCondDiagGaussian
from ....distributions.conditional import ConditionalDiagGaussian as _NativeConditionalDiagGaussian
from ....distributions.conditional import class_labels
from ....flows.base import as_event_shape
from ....utils.checks import positive_int
from .._state import normflows_state, renamed

_LOG_2PI = math.log(2 * math.pi)


def _log_temperature(temperature: float | None) -> float:
    """``log T`` of a sampling temperature (0 for None); ValueError unless ``T > 0``."""
    if temperature is None:
        return 0.0
    if not temperature > 0:
        raise ValueError(f"temperature must be positive or None, got {temperature}")
    return math.log(temperature)


class BaseDistribution(_native.BaseDistribution):
    """normflows' ``BaseDistribution``: flowforge's :class:`~flowforge.distributions.BaseDistribution`
    (``forward(num_samples) -> (z, log q(z))``, ``log_prob(z)``) whose ``sample`` passes keyword
    arguments on to ``forward`` as normflows' does (``sample(n, context=c)``, ``sample(n, y=labels)``).
    Every base of this module derives from it."""

    def sample(self, num_samples: int = 1, **kwargs: Any) -> torch.Tensor:
        return self.forward(num_samples, **kwargs)[0]


class _ClassLabels:
    """Labels for a class-conditional base in a flowforge model: the base takes label indices (or
    normflows' one-hot rows), the layers receive one-hot rows; sampling without labels draws random
    classes. Subclasses set ``num_classes``."""

    num_classes: int

    def prepare_context(self, context: Any, rows: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(context, int) and not isinstance(context, bool):
            context = torch.full((rows,), context, dtype=torch.long, device=like.device)
        if not isinstance(context, torch.Tensor):
            raise TypeError(f"class labels must be a tensor or an int, got {type(context).__name__}")
        labels = class_labels(context.to(like.device), self.num_classes)
        if labels.shape[0] != rows:
            raise ValueError(
                f"{type(self).__name__}: {labels.shape[0]} labels for {rows} samples; give one label per sample"
            )
        return labels, F.one_hot(labels, self.num_classes).to(like.dtype)

    def default_context(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randint(self.num_classes, (rows,), device=like.device)

    def _one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """normflows' label rows ``(batch, num_classes)``: indices one-hot encoded, 2-D rows as given."""
        if y.dim() == 1:
            return F.one_hot(class_labels(y, self.num_classes), self.num_classes).to(like)
        if y.dim() == 2 and y.shape[1] == self.num_classes:
            return y.to(like)
        raise ValueError(
            f"{type(self).__name__}: labels must be indices (batch,) or rows (batch, {self.num_classes}), "
            f"got shape {tuple(y.shape)}"
        )

    def _labels_for(self, num_samples: int, y: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """The label rows for sampling: ``y``'s (its length is the number of samples), or random classes."""
        if y is None:
            y = torch.randint(self.num_classes, (positive_int("num_samples", num_samples),), device=like.device)
        return self._one_hot(y, like)


class DiagGaussian(_NativeDiagGaussian, BaseDistribution):
    r"""normflows' ``DiagGaussian(shape, trainable=True)``: flowforge's
    :class:`~flowforge.distributions.DiagGaussian` (``loc``, ``log_scale`` of shape ``(1, *shape)``, as
    in normflows) that takes and ignores normflows' ``context`` argument and honours the
    ``temperature`` attribute of annealed sampling: with ``T`` set, ``σ`` is ``T σ``."""

    def __init__(self, shape: int | Iterable[int], trainable: bool = True):
        super().__init__(shape, trainable)
        self.n_dim = len(self.shape)
        self.d = self.dim
        self.temperature: float | None = None

    def _log_scale(self) -> torch.Tensor:
        return self.log_scale + _log_temperature(self.temperature)

    _sampling_log_scale = _log_scale  # the pictures' column map samples at the temperature too

    def forward(self, num_samples: int = 1, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.temperature is None:
            return super().forward(num_samples)
        log_scale = self._log_scale()
        eps = torch.randn(
            (positive_int("num_samples", num_samples), *self.shape), dtype=self.loc.dtype, device=self.loc.device
        )
        log_p = -0.5 * self.dim * _LOG_2PI - log_scale.sum() - 0.5 * (eps * eps).flatten(1).sum(1)
        return self.loc + torch.exp(log_scale) * eps, log_p

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.temperature is None:
            return super().log_prob(z)
        self.check_input(z)
        log_scale = self._log_scale()
        eps = (z - self.loc) * torch.exp(-log_scale)
        return -0.5 * self.dim * _LOG_2PI - log_scale.sum() - 0.5 * (eps * eps).flatten(1).sum(1)


class Uniform(_NativeUniform, BaseDistribution):
    """normflows' ``Uniform(shape, low=-1.0, high=1.0)``: flowforge's
    :class:`~flowforge.distributions.Uniform` that takes and ignores ``context``. As in normflows,
    ``low`` and ``high`` are not saved in the ``state_dict`` (they are buffers that follow
    ``.to()``, not persistent ones)."""

    def __init__(self, shape: int | Iterable[int], low: float = -1.0, high: float = 1.0):
        super().__init__(shape, low, high)
        for name in ("low", "high"):
            value = self._buffers.pop(name)
            self.register_buffer(name, value, persistent=False)
        self.d = self.dim

    def forward(self, num_samples: int = 1, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(num_samples)

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return super().log_prob(z)


class ConditionalDiagGaussian(_NativeConditionalDiagGaussian, BaseDistribution):
    r"""normflows' ``ConditionalDiagGaussian(shape, context_encoder)``: flowforge's
    :class:`~flowforge.distributions.ConditionalDiagGaussian`, ``[μ(c), log σ(c)] = context_encoder(c)``,
    whose ``sample`` also takes the context by keyword (``sample(num_samples, context=c)``)."""

    # sample: the normflows BaseDistribution's, which passes the context on


class UniformGaussian(BaseDistribution):
    r"""normflows' ``UniformGaussian(ndim, ind, scale=None)``: a vector whose entries ``ind`` are
    uniform on ``[−s/2, s/2]`` and the others Gaussian ``N(0, s²)``, ``s = scale`` per entry (ones by
    default). ``log q(z) = −Σ_{i∈ind} log sᵢ + Σ_{i∉ind} log N(zᵢ; 0, sᵢ²)``; as in normflows the
    uniform entries are not checked to lie in their interval. Buffers ``ind``, ``ind_``, ``inv_perm``
    and ``scale`` as in normflows."""

    ind: torch.Tensor
    ind_: torch.Tensor
    inv_perm: torch.Tensor
    scale: torch.Tensor

    def __init__(self, ndim: int, ind: int | Iterable[int] | torch.Tensor, scale: torch.Tensor | None = None):
        super().__init__()
        self.ndim = positive_int("ndim", ndim)
        self.shape = (self.ndim,)
        indices = torch.as_tensor([ind] if isinstance(ind, int) else list(ind), dtype=torch.long).flatten()
        if indices.numel() and (indices.min() < 0 or indices.max() >= ndim or indices.unique().numel() != len(indices)):
            raise ValueError(f"UniformGaussian: ind must be distinct indices in [0, {ndim}), got {indices.tolist()}")
        others = torch.tensor([i for i in range(ndim) if i not in set(indices.tolist())], dtype=torch.long)
        self.register_buffer("ind", indices)
        self.register_buffer("ind_", others)
        self.register_buffer("inv_perm", torch.argsort(torch.cat((indices, others))))
        if scale is None:
            scale = torch.ones(ndim)
        scale = torch.as_tensor(scale)
        if scale.shape != (ndim,):
            raise ValueError(f"UniformGaussian: scale must have shape ({ndim},), got {tuple(scale.shape)}")
        self.register_buffer("scale", scale)

    def forward(self, num_samples: int = 1, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.sample(num_samples)
        return z, self.log_prob(z)

    def sample(self, num_samples: int = 1, context: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        positive_int("num_samples", num_samples)
        like = self.scale
        uniform = torch.rand((num_samples, len(self.ind)), dtype=like.dtype, device=like.device) - 0.5
        gaussian = torch.randn((num_samples, len(self.ind_)), dtype=like.dtype, device=like.device)
        return self.scale * torch.cat((uniform, gaussian), -1)[..., self.inv_perm]

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(z)
        log_uniform = -torch.log(self.scale[self.ind]).sum()
        scale = self.scale[self.ind_]
        standard = z[..., self.ind_] / scale
        log_gaussian = (-0.5 * _LOG_2PI - torch.log(scale) - 0.5 * standard * standard).sum(-1)
        return log_uniform + log_gaussian


def _to_native_layout(value: torch.Tensor) -> torch.Tensor:
    return value.movedim(-1, 0)


def _to_normflows_layout(value: torch.Tensor) -> torch.Tensor:
    return value.movedim(0, -1).contiguous()


def _save_classes_last(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for name in ("loc", "log_scale"):
        if prefix + name in state:
            state[prefix + name] = _to_normflows_layout(state[prefix + name])


class ClassCondDiagGaussian(_NativeClassCondDiagGaussian, BaseDistribution):
    r"""normflows' ``ClassCondDiagGaussian(shape, num_classes)``: flowforge's
    :class:`~flowforge.distributions.ClassCondDiagGaussian` with normflows' call forms: given labels
    ``y``, ``forward(num_samples, y)`` draws ``len(y)`` samples whatever ``num_samples`` says, and the
    ``temperature`` attribute scales ``σ`` by ``T``. Its ``state_dict`` has normflows' layout
    ``loc``/``log_scale`` of shape ``(*shape, num_classes)`` (flowforge keeps the classes first).
    Labels are indices or one-hot rows (flowforge refuses normflows' soft label rows)."""

    def __init__(self, shape: int | Iterable[int], num_classes: int):
        super().__init__(shape, num_classes)
        self.n_dim = len(self.shape)
        self.d = self.dim
        self.temperature: float | None = None

        self._register_state_dict_hook(_save_classes_last)
        self._register_load_state_dict_pre_hook(self._load_classes_last)

    def _load_classes_last(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        """Accept normflows' ``(*shape, num_classes)`` entries (and flowforge's ``(num_classes, *shape)``)."""
        native = (self.num_classes, *self.shape)
        normflows = (*self.shape, self.num_classes)
        for name in ("loc", "log_scale"):
            value = state.get(prefix + name)
            if isinstance(value, torch.Tensor) and tuple(value.shape) == normflows:
                state[prefix + name] = _to_native_layout(value)
            elif isinstance(value, torch.Tensor) and tuple(value.shape) != native:
                raise ValueError(
                    f"{type(self).__name__}: {prefix + name} must have shape {normflows} (normflows) "
                    f"or {native} (flowforge), got {tuple(value.shape)}"
                )

    def _parameters_at(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = class_labels(y, self.num_classes)
        return self.loc[y], self.log_scale[y] + _log_temperature(self.temperature)

    def forward(self, num_samples: int = 1, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if y is not None:
            num_samples = len(y)
        if self.temperature is None:
            return super().forward(num_samples, y)
        if y is None:
            y = torch.randint(self.num_classes, (positive_int("num_samples", num_samples),), device=self.loc.device)
        loc, log_scale = self._parameters_at(y)
        eps = torch.randn_like(loc)
        log_p = -0.5 * self.dim * _LOG_2PI - log_scale.flatten(1).sum(1) - 0.5 * eps.square().flatten(1).sum(1)
        return loc + torch.exp(log_scale) * eps, log_p

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.temperature is None or y is None:
            return super().log_prob(z, y)
        self.check_input(z)
        loc, log_scale = self._parameters_at(y)
        eps = (z - loc) * torch.exp(-log_scale)
        return -0.5 * self.dim * _LOG_2PI - log_scale.flatten(1).sum(1) - 0.5 * eps.square().flatten(1).sum(1)


class GlowBase(_ClassLabels, BaseDistribution):
    r"""normflows' ``GlowBase(shape, num_classes=None, logscale_factor=3.0)``: the base of Glow
    (Kingma & Dhariwal 2018), a diagonal Gaussian with one mean and log-scale per channel (the first
    axis of ``shape``), optionally shifted per class.

    ``μ = loc · exp(f · loc_logs) [+ y @ loc_cc]``, ``log σ = log_scale · exp(f · log_scale_logs)
    [+ y @ log_scale_cc]`` with ``f = logscale_factor``, broadcast over the other axes;
    ``log q(z) = −d/2 log 2π − Σ log σ − ½ Σ ((z − μ)/σ)²`` (the per-channel log-scale summed over the
    ``num_pix`` positions). The ``temperature`` attribute adds ``log T`` to ``log σ``. Parameter names
    are normflows'."""

    loc: torch.Tensor
    loc_logs: torch.Tensor
    log_scale: torch.Tensor
    log_scale_logs: torch.Tensor
    loc_cc: torch.Tensor
    log_scale_cc: torch.Tensor

    def __init__(self, shape: int | Iterable[int], num_classes: int | None = None, logscale_factor: float = 3.0):
        super().__init__()
        self.shape = as_event_shape(shape)
        self.n_dim = len(self.shape)
        self.num_pix = math.prod(self.shape[1:])
        self.d = self.dim = math.prod(self.shape)
        self.sum_dim = list(range(1, self.n_dim + 1))
        self.class_cond = num_classes is not None
        if num_classes is not None:
            self.num_classes = positive_int("num_classes", num_classes)
        self.logscale_factor = logscale_factor
        channel_shape = (1, self.shape[0], *((self.n_dim - 1) * [1]))
        for name in ("loc", "loc_logs", "log_scale", "log_scale_logs"):
            setattr(self, name, nn.Parameter(torch.zeros(channel_shape)))
        if self.class_cond:
            self.loc_cc = nn.Parameter(torch.zeros(self.num_classes, self.shape[0]))
            self.log_scale_cc = nn.Parameter(torch.zeros(self.num_classes, self.shape[0]))
        self.temperature: float | None = None

    @property
    def takes_context(self) -> bool:  # type: ignore[override]
        return self.class_cond

    def _parameters_at(self, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.loc * torch.exp(self.loc_logs * self.logscale_factor)
        log_scale = self.log_scale * torch.exp(self.log_scale_logs * self.logscale_factor)
        if self.class_cond:
            if y is None:
                raise ValueError("this GlowBase is class-conditional: give the labels y")
            rows = self._one_hot(y, self.loc)
            per_class = (rows.shape[0], self.shape[0], *((self.n_dim - 1) * [1]))
            loc = loc + (rows @ self.loc_cc).view(per_class)
            log_scale = log_scale + (rows @ self.log_scale_cc).view(per_class)
        return loc, log_scale + _log_temperature(self.temperature)

    def _log_prob(self, log_scale: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (
            -0.5 * self.dim * _LOG_2PI
            - self.num_pix * log_scale.sum(dim=self.sum_dim)
            - 0.5 * eps.square().sum(dim=self.sum_dim)
        )

    def forward(self, num_samples: int = 1, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.class_cond:
            y = self._labels_for(num_samples, y, self.loc)
            num_samples = len(y)
        loc, log_scale = self._parameters_at(y)
        eps = torch.randn(
            (positive_int("num_samples", num_samples), *self.shape), dtype=self.loc.dtype, device=self.loc.device
        )
        return loc + torch.exp(log_scale) * eps, self._log_prob(log_scale, eps)

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(z)
        loc, log_scale = self._parameters_at(y)
        return self._log_prob(log_scale, (z - loc) * torch.exp(-log_scale))


def _batch_dims_factor(s: torch.Tensor, z: torch.Tensor) -> int:
    """normflows' count of positions a per-channel affine parameter is shared over: the product of
    ``z``'s sizes along the axes (after the batch axis) where ``s`` has size 1."""
    shared = [axis for axis in range(1, s.dim()) if s.shape[axis] == 1]
    return math.prod(z.shape[axis] for axis in shared)


class _AffineConst(nn.Module):
    """``z ↦ z · exp(s) + t`` with constants ``s``, ``t`` of shape ``(1, *affine_shape)`` (and, with
    classes, per-class offsets ``s_cc``, ``t_cc`` of shape ``(num_classes, prod(affine_shape))``): the
    transform of :class:`AffineGaussian`, with normflows' parameter names (``AffineConstFlow`` and
    ``CCAffineConst``)."""

    s: torch.Tensor
    t: torch.Tensor
    s_cc: torch.Tensor
    t_cc: torch.Tensor

    def __init__(self, shape: Sequence[int], num_classes: int | None):
        super().__init__()
        self.shape = tuple(shape)
        self.s = nn.Parameter(torch.zeros(self.shape)[None])
        self.t = nn.Parameter(torch.zeros(self.shape)[None])
        if num_classes is not None:
            self.s_cc = nn.Parameter(torch.zeros(num_classes, math.prod(self.shape)))
            self.t_cc = nn.Parameter(torch.zeros(num_classes, math.prod(self.shape)))

    def _parameters_at(self, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if y is None:
            return self.s, self.t
        return self.s + (y @ self.s_cc).view(-1, *self.shape), self.t + (y @ self.t_cc).view(-1, *self.shape)

    def log_det(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        factor = _batch_dims_factor(s, z)
        return factor * s.flatten(1).sum(1).expand(z.shape[0])

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._parameters_at(y)
        return z * torch.exp(s) + t, self.log_det(s, z)

    def inverse(self, z: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._parameters_at(y)
        return (z - t) * torch.exp(-s), -self.log_det(s, z)


class AffineGaussian(_ClassLabels, BaseDistribution):
    r"""normflows' ``AffineGaussian(shape, affine_shape, num_classes=None)``: a standard normal pushed
    through a learned constant affine map, ``z = ε · exp(s) + t`` (``s``, ``t`` of shape
    ``affine_shape`` broadcast over ``shape``; plus per-class offsets when ``num_classes`` is given).
    ``log q(z) = log N(ε; 0, T² I) − log|det|``, ``T`` the ``temperature`` attribute (1 when None).
    The map is the submodule ``transform`` with normflows' parameters ``s``, ``t`` (``s_cc``, ``t_cc``)."""

    def __init__(self, shape: int | Iterable[int], affine_shape: int | Iterable[int], num_classes: int | None = None):
        super().__init__()
        self.shape = as_event_shape(shape)
        self.n_dim = len(self.shape)
        self.d = self.dim = math.prod(self.shape)
        self.sum_dim = list(range(1, self.n_dim + 1))
        self.affine_shape = as_event_shape(affine_shape)
        self.class_cond = num_classes is not None
        if num_classes is not None:
            self.num_classes = positive_int("num_classes", num_classes)
        self.transform: _AffineConst = _AffineConst(self.affine_shape, num_classes)
        self.temperature: float | None = None

    @property
    def takes_context(self) -> bool:  # type: ignore[override]
        return self.class_cond

    def _rows(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.class_cond:
            return None
        if y is None:
            raise ValueError("this AffineGaussian is class-conditional: give the labels y")
        return self._one_hot(y, self.transform.s)

    def forward(self, num_samples: int = 1, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        like = self.transform.s
        rows = None
        if self.class_cond:
            rows = self._labels_for(num_samples, y, like)
            num_samples = len(rows)
        log_t = _log_temperature(self.temperature)
        eps = torch.randn((positive_int("num_samples", num_samples), *self.shape), dtype=like.dtype, device=like.device)
        log_p = -0.5 * self.dim * _LOG_2PI - self.dim * log_t - 0.5 * eps.square().sum(dim=self.sum_dim)
        z, log_det = self.transform(math.exp(log_t) * eps, rows)
        return z, log_p - log_det

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(z)
        log_t = _log_temperature(self.temperature)
        eps, log_det = self.transform.inverse(z, self._rows(y))
        eps = eps / math.exp(log_t)
        return log_det - self.dim * log_t - 0.5 * self.dim * _LOG_2PI - 0.5 * eps.square().sum(dim=self.sum_dim)


def _mixture_argument(name: str, value: Any, shape: tuple[int, ...]) -> torch.Tensor | None:
    """``loc``/``scale``/``weights`` of :class:`GaussianMixture` as a tensor of ``shape``: None stays
    None, a single number (normflows takes one) fills the whole shape, anything else must have
    ``shape`` (or normflows' ``(1, *shape)``)."""
    if value is None:
        return None
    tensor = torch.as_tensor(value).to(torch.get_default_dtype())
    if tensor.numel() == 1 and tensor.dim() <= 1:
        return tensor.reshape(()).expand(shape).clone()
    if tuple(tensor.shape) == (1, *shape):
        return tensor[0]
    if tuple(tensor.shape) != shape:
        raise ValueError(f"GaussianMixture: {name} must be one number or of shape {shape}, got {tuple(tensor.shape)}")
    return tensor


class GaussianMixture(_NativeGaussianMixture, BaseDistribution):
    r"""normflows' ``GaussianMixture(n_modes, dim, loc=None, scale=None, weights=None, trainable=True)``:
    flowforge's :class:`~flowforge.distributions.GaussianMixture` that also takes lists, arrays and a
    single number for ``loc``/``scale``/``weights`` (one number for every mode and dimension, as in
    normflows), with normflows' ``state_dict`` layout: ``loc``, ``log_scale`` ``(1, K, dim)`` and
    ``weight_scores`` ``(1, K)`` (flowforge: ``(K, dim)`` and ``weight_logits`` ``(K,)``). The
    parameters have the default dtype (normflows makes them float64)."""

    def __init__(
        self,
        n_modes: int,
        dim: int,
        loc: Any = None,
        scale: Any = None,
        weights: Any = None,
        trainable: bool = True,
    ):
        shape = (positive_int("n_modes", n_modes), positive_int("dim", dim))
        super().__init__(
            n_modes,
            dim,
            _mixture_argument("loc", loc, shape),
            _mixture_argument("scale", scale, shape),
            _mixture_argument("weights", weights, shape[:1]),
            trainable,
        )
        # normflows keeps a leading axis of 1 on each and calls the log weights weight_scores.
        normflows_state(self, *renamed({"weight_logits": "weight_scores"}, unsqueeze=True))

    @property
    def weight_scores(self) -> torch.Tensor:
        """normflows' name of the log weights, ``(1, K)``."""
        return self.weight_logits.unsqueeze(0)


class GaussianPCA(BaseDistribution):
    r"""normflows' ``GaussianPCA(dim, latent_dim=None, sigma=0.1)``: probabilistic PCA, the Gaussian
    ``z = ε W + loc + noise`` with ``ε ~ N(0, I_latent_dim)`` and noise ``N(0, σ² I)``, i.e.
    ``N(loc, Σ)`` with ``Σ = Wᵀ W + σ² I`` (Tipping & Bishop 1999). Parameters ``loc`` ``(1, dim)``,
    ``W`` ``(latent_dim, dim)`` (standard normal at the start) and ``log_sigma`` as in normflows.

    ``log q(z) = −d/2 log 2π − ½ log det Σ − ½ (z − loc) Σ⁻¹ (z − loc)ᵀ``, the Gaussian density.
    normflows 1.7.3 writes ``+d/2 log 2π − ½ det Σ`` instead (not a normalised density); flowforge
    keeps the correct one. As in normflows, samples leave out the noise term."""

    def __init__(self, dim: int, latent_dim: int | None = None, sigma: float = 0.1):
        super().__init__()
        self.dim = positive_int("dim", dim)
        self.latent_dim = self.dim if latent_dim is None else positive_int("latent_dim", latent_dim)
        if not sigma > 0:
            raise ValueError(f"GaussianPCA: sigma must be positive, got {sigma}")
        self.shape = (self.dim,)
        self.loc = nn.Parameter(torch.zeros(1, self.dim))
        self.W = nn.Parameter(torch.randn(self.latent_dim, self.dim))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    def covariance(self) -> torch.Tensor:
        """``Σ = Wᵀ W + σ² I``."""
        eye = torch.eye(self.dim, dtype=self.loc.dtype, device=self.loc.device)
        return self.W.T @ self.W + torch.exp(2 * self.log_sigma) * eye

    def _log_prob_centred(self, centred: torch.Tensor) -> torch.Tensor:
        cholesky = torch.linalg.cholesky(self.covariance())
        whitened = torch.linalg.solve_triangular(cholesky, centred.T, upper=False)
        log_det = 2 * torch.log(torch.diagonal(cholesky)).sum()
        return -0.5 * self.dim * _LOG_2PI - 0.5 * log_det - 0.5 * whitened.square().sum(0)

    def forward(self, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(
            positive_int("num_samples", num_samples), self.latent_dim, dtype=self.loc.dtype, device=self.loc.device
        )
        centred = eps @ self.W
        return centred + self.loc, self._log_prob_centred(centred)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        return self._log_prob_centred(z - self.loc)


__all__ = [
    "AffineGaussian",
    "BaseDistribution",
    "ClassCondDiagGaussian",
    "ConditionalDiagGaussian",
    "DiagGaussian",
    "GaussianMixture",
    "GaussianPCA",
    "GlowBase",
    "Uniform",
    "UniformGaussian",
]
