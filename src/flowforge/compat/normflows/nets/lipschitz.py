"""normflows' ``nf.nets.lipschitz``: the Lipschitz-bounded nets of residual flows with normflows'
layer structure, buffers and numerics (Chen et al. 2019, https://arxiv.org/abs/1906.02735).

Each linear/convolutional map is rescaled by ``max(1, σ/coeff)``, where ``σ = uᵀ W v`` is an
estimate of its induced ``domain → codomain`` operator norm from power iterations whose vectors
``u``, ``v`` are buffers. Evaluation uses the stored vectors; ``update_lipschitz`` (or
``compute_weight(update=True)``) advances them. flowforge's native :class:`~flowforge.nets.LipschitzMLP`
instead normalises by the exact spectral norm (see its docstring); these classes exist so that
normflows checkpoints and numerics carry over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Norm = float | torch.Tensor


def vector_norm(x: torch.Tensor, p: float) -> torch.Tensor:
    """``(Σ xᵢ^p)^(1/p)`` over all entries (``x`` nonnegative)."""
    return torch.sum(x.reshape(-1) ** p) ** (1 / p)


def projmax_(v: torch.Tensor) -> torch.Tensor:
    """In place: ``v`` becomes the unit vector at the argmax of ``|v|``."""
    index = torch.argmax(torch.abs(v))
    v.zero_()
    v[index] = 1
    return v


def _phase_and_size(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    size = torch.abs(x)
    phase = x / size
    phase[torch.isnan(phase)] = 1
    return phase, size / torch.max(size)


def normalize_v(v: torch.Tensor, domain: Norm, out: torch.Tensor | None = None) -> torch.Tensor:
    """The dual step of the induced-norm power method for the input vector (``domain`` norm):
    ``v/‖v‖₂`` for 2, the largest coordinate for 1, else ``sign(v)|v|^(1/(p−1))`` normalised in ``p``."""
    if not torch.is_tensor(domain) and domain == 2:
        return F.normalize(v, p=2, dim=0, out=out)
    if domain == 1:
        return projmax_(v)
    phase, size = _phase_and_size(v)
    size = size ** (1 / (domain - 1))
    return phase * size / vector_norm(size, domain)  # type: ignore[arg-type]


def normalize_u(u: torch.Tensor, codomain: Norm, out: torch.Tensor | None = None) -> torch.Tensor:
    """The power-method step for the output vector (``codomain`` norm ``q``): ``u/‖u‖₂`` for 2, the
    largest coordinate for ∞, else ``sign(u)|u|^(q−1)`` normalised in the dual norm ``q/(q−1)``."""
    if not torch.is_tensor(codomain) and codomain == 2:
        return F.normalize(u, p=2, dim=0, out=out)
    if codomain == float("inf"):
        return projmax_(u)
    phase, size = _phase_and_size(u)
    size = size ** (codomain - 1)
    dual = float("inf") if codomain == 1 else codomain / (codomain - 1)
    if dual == float("inf"):
        return phase * size / torch.max(size)
    return phase * size / vector_norm(size, dual)  # type: ignore[arg-type]


def leaky_elu(x: torch.Tensor, a: float = 0.3) -> torch.Tensor:
    """``a x + (1 − a) elu(x)``."""
    return a * x + (1 - a) * F.elu(x)


def asym_squash(x: torch.Tensor) -> torch.Tensor:
    """_Map a learnable order onto ``(1, ∞)``-ish norms: ``2 tanh(−leaky_elu(0.549… − x)) + 3``."""
    return torch.tanh(-leaky_elu(-x + 0.5493061829986572)) * 2 + 3


def _pair(x: Any) -> tuple[int, int]:
    return tuple(x) if isinstance(x, Sequence) else (x, x)


class Swish(nn.Module):
    r"""LipSwish ``x σ(softplus(β) x) / 1.1`` with learned ``β`` (a parameter of shape ``(1,)``, 0.5 at
    the start), Lipschitz constant at most 1 (Chen et al. 2019)."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor([0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x * F.softplus(self.beta)) / 1.1


_Map = Callable[[torch.Tensor], torch.Tensor]


def _power_step(apply: _Map, apply_t: _Map, v: torch.Tensor, domain: Norm, codomain: Norm) -> tuple[torch.Tensor, ...]:
    """One step of the power method for ``‖A‖_{domain→codomain}`` (Higham's method, as in QETLAB's
    InducedMatrixNorm): the image ``Av`` is turned into its dual direction in the codomain norm
    (``u``), which ``Aᵀ`` pulls back and the domain norm turns into the next ``v``. Fresh tensors."""
    u = normalize_u(apply(v), codomain)
    return u, normalize_v(apply_t(u), domain)


def _moved_less_than(new: torch.Tensor, old: torch.Tensor, atol: float, rtol: float) -> bool:
    """Whether a step changed the vector by less than ``atol + rtol · max(new)`` in root-mean-square."""
    rms_change = torch.norm(new - old) / new.nelement() ** 0.5
    return bool(rms_change < atol + rtol * torch.max(new))


class _InducedNorm(nn.Module):
    """The linear and convolutional induced-norm layers: parameters, init and the power method over
    the operator ``A`` a subclass gives (:meth:`_operator`, on flat vectors)."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    u: torch.Tensor
    v: torch.Tensor
    scale: torch.Tensor

    def _setup(self, shape: tuple[int, ...], bias: bool, coeff: float, domain: Norm, codomain: Norm,
               n_iterations: int | None, atol: float | None, rtol: float | None, zero_init: bool) -> None:  # fmt: skip
        self.coeff, self.n_iterations, self.atol, self.rtol = coeff, n_iterations, atol, rtol
        self.domain, self.codomain = domain, codomain
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(shape[0])) if bias else None
        self.reset_parameters(zero_init)

    def reset_parameters(self, zero_init: bool = False) -> None:
        """Kaiming-uniform weight (``a = √5``, divided by 1000 with ``zero_init``), uniform bias ``±1/√fan_in``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if zero_init:
            with torch.no_grad():
                self.weight.div_(1000)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def compute_domain_codomain(self) -> tuple[Norm, Norm]:
        """The norms' orders (squashed by :func:`asym_squash` when they are learnable tensors)."""
        if torch.is_tensor(self.domain):
            return asym_squash(self.domain), asym_squash(self.codomain)  # type: ignore[arg-type]
        return self.domain, self.codomain

    # -- what a subclass supplies ------------------------------------------------------------------

    def _operator(self, weight: torch.Tensor) -> tuple[_Map, _Map]:
        """``(x ↦ Ax, y ↦ Aᵀy)`` on flat vectors for the kernel ``weight``."""
        raise NotImplementedError

    def _stores(self, order: Norm, projmax_order: float) -> bool:
        """Whether the power method's new vector for a norm of this ``order`` replaces the buffer
        (``projmax_order``: the order whose step is the arg-max projection)."""
        return True

    # -- the power method --------------------------------------------------------------------------

    def _plan(self, n_iterations: int | None, atol: float | None, rtol: float | None) -> tuple[int, tuple | None]:
        """``(most steps, (atol, rtol) or None)``: a fixed count, or up to 200 steps with tolerances.
        As in normflows, an explicit ``atol`` also stands in for ``rtol``."""
        count = self.n_iterations if n_iterations is None else n_iterations
        tolerances = (self.atol if atol is None else atol, self.rtol if rtol is None else atol)
        if count is not None:
            return count, None
        if None in tolerances:
            raise ValueError(
                f"{type(self).__name__}: the power method needs n_iterations or both atol and rtol, got neither"
            )
        return 200, tolerances

    @torch.no_grad()
    def _advance(self, n_iterations: int | None, atol: float | None, rtol: float | None) -> tuple[torch.Tensor, ...]:
        """Run the power method from the buffers; store the new vectors (see :meth:`_stores`) and
        return them (copies, so that later updates of the buffers leave autograd's saved values alone)."""
        steps, tolerances = self._plan(n_iterations, atol, rtol)
        domain, codomain = self.compute_domain_codomain()
        apply, apply_t = self._operator(self.weight)
        u, v = self.u, self.v
        for _ in range(steps):
            u_next, v_next = _power_step(apply, apply_t, v, domain, codomain)
            done = tolerances is not None and (
                _moved_less_than(u_next, u, *tolerances) and _moved_less_than(v_next, v, *tolerances)
            )
            u, v = u_next, v_next
            if done:
                break
        if steps > 0:
            for buffer, new, order, projmax_order in ((self.u, u, codomain, math.inf), (self.v, v, domain, 1)):
                if self._stores(order, projmax_order):
                    buffer.copy_(new)
        return u.clone(), v.clone()

    def _sigma(self, weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``σ = uᵀ A v``, the norm estimate (differentiable in ``weight``)."""
        apply, _ = self._operator(weight)
        return torch.dot(u, apply(v))

    def compute_one_iter(self) -> torch.Tensor:
        """``σ`` after one more power step from the buffers, which are left as they are."""
        domain, codomain = self.compute_domain_codomain()
        weight = self.weight.detach()
        apply, apply_t = self._operator(weight)
        u, v = _power_step(apply, apply_t, self.v.detach(), domain, codomain)
        return self._sigma(weight, u, v)

    def compute_weight(
        self, update: bool = True, n_iterations: int | None = None, atol: float | None = None, rtol: float | None = None
    ) -> torch.Tensor:
        """The kernel divided by ``max(1, σ/coeff)``; with ``update``, the power method advances the
        buffers first (``n_iterations`` steps, or until both vectors move less than the tolerances)."""
        u, v = self._advance(n_iterations, atol, rtol) if update else (self.u, self.v)
        sigma = self._sigma(self.weight, u, v)
        with torch.no_grad():
            self.scale.copy_(sigma)
        # normflows' factor max(1, σ/coeff) is a (1,)-tensor of the default dtype: σ (0-dim) takes its
        # dtype by torch's promotion rules, so a float64 layer divides by a float32-rounded factor.
        return self.weight / torch.max(torch.ones(1, device=self.weight.device), sigma / self.coeff)

    @torch.no_grad()
    def _choose_start(self, draw: Callable[[], tuple[torch.Tensor, torch.Tensor]], first_steps: int | None) -> None:
        """Settle the buffers' starting vectors. Power iterations for norms other than 2 can stall
        at a local maximum, so ten more random starts (``draw()`` gives raw ``(u, v)``) run 200
        steps each; normflows' selection keeps the last start whose ``σ`` beats the first run's."""
        domain, codomain = self.compute_domain_codomain()
        self.compute_weight(True, n_iterations=first_steps)
        first_sigma = self.scale.clone()
        kept = (self.u.clone(), self.v.clone())
        restarts = 0 if (domain == 2 and codomain == 2) else 10
        for _ in range(restarts):
            raw_u, raw_v = draw()
            self.u.copy_(normalize_u(raw_u, codomain))
            self.v.copy_(normalize_v(raw_v, domain))
            self.compute_weight(True, n_iterations=200)
            if self.scale > first_sigma:
                kept = (self.u.clone(), self.v.clone())
        self.u.copy_(kept[0])
        self.v.copy_(kept[1])

    def _settings(self) -> list[str]:
        domain, codomain = self.compute_domain_codomain()
        return [
            f"coeff={self.coeff}",
            f"domain={float(domain):.2f}",
            f"codomain={float(codomain):.2f}",
            f"n_iters={self.n_iterations}",
            f"atol={self.atol}",
            f"rtol={self.rtol}",
            f"learnable_ord={torch.is_tensor(self.domain)}",
        ]


class InducedNormLinear(_InducedNorm):
    r"""normflows' ``InducedNormLinear(in_features, out_features, bias=True, coeff=0.97, domain=2,
    codomain=2, n_iterations=None, atol=None, rtol=None, zero_init=False)``: ``y = W̃x + b`` with
    ``W̃ = W / max(1, σ/coeff)``, ``σ = uᵀWv`` the power-method estimate of ``‖W‖_{domain→codomain}``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        coeff: float = 0.97,
        domain: Norm = 2,
        codomain: Norm = 2,
        n_iterations: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        zero_init: bool = False,
        **unused_kwargs: Any,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup((out_features, in_features), bias, coeff, domain, codomain, n_iterations, atol, rtol, zero_init)

        def draw() -> tuple[torch.Tensor, torch.Tensor]:  # u first, then v: normflows' order of draws
            return self.weight.new_empty(out_features).normal_(0, 1), self.weight.new_empty(in_features).normal_(0, 1)

        with torch.no_grad():
            domain, codomain = self.compute_domain_codomain()
        self.register_buffer("scale", torch.tensor(0.0))
        raw_u, raw_v = draw()
        self.register_buffer("u", normalize_u(raw_u, codomain))
        self.register_buffer("v", normalize_v(raw_v, domain))
        self._choose_start(draw, first_steps=200)

    def _operator(self, weight: torch.Tensor) -> tuple[_Map, _Map]:
        return (lambda x: torch.mv(weight, x)), (lambda y: torch.mv(weight.t(), y))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.compute_weight(update=False), self.bias)

    def extra_repr(self) -> str:
        shape = [f"in_features={self.in_features}", f"out_features={self.out_features}"]
        return ", ".join([*shape, f"bias={self.bias is not None}", *self._settings()])


class InducedNormConv2d(_InducedNorm):
    r"""normflows' ``InducedNormConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True,
    coeff=0.97, domain=2, codomain=2, n_iterations=None, atol=None, rtol=None, zero_init=False)``: a
    convolution whose kernel is divided by ``max(1, σ/coeff)``, ``σ`` the power-method estimate of the
    convolution's operator norm on inputs of the spatial size seen at the first call (a ``1×1`` kernel:
    the norm of its channel matrix). The vectors are set up at the first call, from that size
    (buffers ``spatial_dims``, ``initialized``)."""

    initialized: torch.Tensor
    spatial_dims: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        padding: int | Sequence[int],
        bias: bool = True,
        coeff: float = 0.97,
        domain: Norm = 2,
        codomain: Norm = 2,
        n_iterations: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        zero_init: bool = False,
        **unused_kwargs: Any,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        shape = (out_channels, in_channels, *self.kernel_size)
        self._setup(shape, bias, coeff, domain, codomain, n_iterations, atol, rtol, zero_init)
        self.register_buffer("initialized", torch.tensor(0))
        self.register_buffer("spatial_dims", torch.tensor([1.0, 1.0]))
        self.register_buffer("scale", torch.tensor(0.0))
        self.register_buffer("u", self.weight.new_empty(out_channels))
        self.register_buffer("v", self.weight.new_empty(in_channels))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The vectors' sizes depend on the input size seen first: take the checkpoint's.
        for name in ("u", "v"):
            if prefix + name in state_dict:
                getattr(self, name).resize_(state_dict[prefix + name].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def _one_by_one(self) -> bool:
        return self.kernel_size == (1, 1)

    def _planes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the single input and output images the operator acts on (dilation 1)."""
        height, width = (int(size) for size in self.spatial_dims.tolist())
        geometry = zip((height, width), self.padding, self.kernel_size, self.stride, strict=True)
        out = [(n + 2 * p - k) // s + 1 for n, p, k, s in geometry]
        return (1, self.in_channels, height, width), (1, self.out_channels, *out)

    def _operator(self, weight: torch.Tensor) -> tuple[_Map, _Map]:
        if self._one_by_one:  # a pointwise convolution acts on the channels alone: its matrix
            matrix = weight.view(self.out_channels, self.in_channels)
            return (lambda x: torch.mv(matrix, x)), (lambda y: torch.mv(matrix.t(), y))
        source, target = self._planes()
        stride, padding = self.stride, self.padding

        def apply(x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x.view(source), weight, stride=stride, padding=padding).reshape(-1)

        def apply_t(y: torch.Tensor) -> torch.Tensor:
            return F.conv_transpose2d(y.view(target), weight, stride=stride, padding=padding).reshape(-1)

        return apply, apply_t

    def _stores(self, order: Norm, projmax_order: float) -> bool:
        # normflows writes a 2-norm vector in place only for a plain-number order, copies other
        # orders back, and (1×1 kernels) drops the arg-max projection's vector.
        if torch.is_tensor(order) and order == 2:
            return False
        return not (self._one_by_one and order == projmax_order)

    @torch.no_grad()
    def _initialize_u_v(self) -> None:
        domain, codomain = self.compute_domain_codomain()
        source, target = self._planes()
        sizes = {"u": self.out_channels, "v": self.in_channels}
        if not self._one_by_one:
            sizes = {"u": math.prod(target), "v": math.prod(source)}
        # normflows' draws: u then v for a 1×1 kernel, v then u otherwise, each into its buffer;
        # the restarts draw u then v (float32 ``randn`` for larger kernels).
        for name in ("u", "v") if self._one_by_one else ("v", "u"):
            buffer = getattr(self, name)
            buffer.resize_(sizes[name]).normal_(0, 1)
            buffer.copy_(normalize_u(buffer, codomain) if name == "u" else normalize_v(buffer, domain))
        self.initialized.fill_(1)

        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            if self._one_by_one:
                return self.weight.new_empty(sizes["u"]).normal_(0, 1), self.weight.new_empty(sizes["v"]).normal_(0, 1)
            return torch.randn(sizes["u"]).to(self.weight), torch.randn(sizes["v"]).to(self.weight)

        self._choose_start(draw, first_steps=None)

    def compute_one_iter(self) -> torch.Tensor:
        if not self.initialized:
            raise ValueError(
                f"{type(self).__name__}: run a forward pass first (the layer sets its spatial size on its first input)"
            )
        return super().compute_one_iter()

    def compute_weight(
        self, update: bool = True, n_iterations: int | None = None, atol: float | None = None, rtol: float | None = None
    ) -> torch.Tensor:
        if not self.initialized:
            self._initialize_u_v()
        return super().compute_weight(update, n_iterations, atol, rtol)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            self.spatial_dims.copy_(torch.tensor(input.shape[2:4]).to(self.spatial_dims))
        weight = self.compute_weight(update=False)
        return F.conv2d(input, weight, self.bias, self.stride, self.padding, 1, 1)

    def extra_repr(self) -> str:
        parts = [str(self.in_channels), str(self.out_channels)]
        parts += [f"kernel_size={self.kernel_size}", f"stride={self.stride}"]
        parts += [f"padding={self.padding}"] if any(self.padding) else []
        parts += [] if self.bias is not None else ["bias=False"]
        return ", ".join(parts + self._settings())


class LipschitzMLP(nn.Module):
    """normflows' ``LipschitzMLP(channels, lipschitz_const=0.97, max_lipschitz_iter=5,
    lipschitz_tolerance=None, init_zeros=True)``: ``Swish → InducedNormLinear`` pairs (``self.net``),
    the last linear layer near zero with ``init_zeros``; each layer's Lipschitz constant is below
    ``lipschitz_const`` (up to the power-method estimate)."""

    def __init__(
        self,
        channels: Sequence[int],
        lipschitz_const: float = 0.97,
        max_lipschitz_iter: int | None = 5,
        lipschitz_tolerance: float | None = None,
        init_zeros: bool = True,
    ):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"LipschitzMLP needs at least two widths, got {list(channels)}")
        self.n_layers, self.channels = len(channels) - 1, channels
        self.lipschitz_const, self.max_lipschitz_iter = lipschitz_const, max_lipschitz_iter
        self.lipschitz_tolerance, self.init_zeros = lipschitz_tolerance, init_zeros
        layers: list[nn.Module] = []
        for i in range(self.n_layers):
            layers.append(Swish())
            layers.append(
                InducedNormLinear(
                    channels[i],
                    channels[i + 1],
                    coeff=lipschitz_const,
                    domain=2,
                    codomain=2,
                    n_iterations=max_lipschitz_iter,
                    atol=lipschitz_tolerance,
                    rtol=lipschitz_tolerance,
                    zero_init=init_zeros and i == self.n_layers - 1,
                )  # fmt: skip
            )
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LipschitzCNN(nn.Module):
    """normflows' ``LipschitzCNN(channels, kernel_size, lipschitz_const=0.97, max_lipschitz_iter=5,
    lipschitz_tolerance=None, init_zeros=True)``: ``Swish → InducedNormConv2d`` pairs with "same"
    padding (``kernel_size[i] // 2``), one per entry of ``kernel_size``."""

    def __init__(
        self,
        channels: Sequence[int],
        kernel_size: Sequence[int],
        lipschitz_const: float = 0.97,
        max_lipschitz_iter: int | None = 5,
        lipschitz_tolerance: float | None = None,
        init_zeros: bool = True,
    ):
        super().__init__()
        if len(channels) < len(kernel_size) + 1:
            raise ValueError(
                f"LipschitzCNN needs a channel count per layer plus one, got channels {list(channels)} for "
                f"{len(kernel_size)} kernel sizes"
            )
        self.n_layers, self.channels, self.kernel_size = len(kernel_size), channels, kernel_size
        self.lipschitz_const, self.max_lipschitz_iter = lipschitz_const, max_lipschitz_iter
        self.lipschitz_tolerance, self.init_zeros = lipschitz_tolerance, init_zeros
        layers: list[nn.Module] = []
        for i in range(self.n_layers):
            layers.append(Swish())
            layers.append(
                InducedNormConv2d(
                    channels[i],
                    channels[i + 1],
                    kernel_size[i],
                    stride=1,
                    padding=kernel_size[i] // 2,
                    bias=True,
                    coeff=lipschitz_const,
                    domain=2,
                    codomain=2,
                    n_iterations=max_lipschitz_iter,
                    atol=lipschitz_tolerance,
                    rtol=lipschitz_tolerance,
                    zero_init=init_zeros and i == self.n_layers - 1,
                )  # fmt: skip
            )
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


__all__ = [
    "InducedNormConv2d",
    "InducedNormLinear",
    "LipschitzCNN",
    "LipschitzMLP",
    "Swish",
    "asym_squash",
    "leaky_elu",
    "normalize_u",
    "normalize_v",
    "projmax_",
    "vector_norm",
]
