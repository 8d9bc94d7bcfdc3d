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
from collections.abc import Sequence
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
    """Map a learnable order onto ``(1, ∞)``-ish norms: ``2 tanh(−leaky_elu(0.549… − x)) + 3``."""
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


class _InducedNorm(nn.Module):
    """What the linear and convolutional induced-norm layers share: parameters, init, the norms."""

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

    def _iterations(self, n_iterations: int | None, atol: float | None, rtol: float | None) -> tuple[int, bool]:
        """How many power iterations at most, and whether to stop early at the tolerances."""
        n_iterations = self.n_iterations if n_iterations is None else n_iterations
        atol = self.atol if atol is None else atol
        rtol = self.rtol if rtol is None else atol  # normflows (and residual-flows) use atol here
        if n_iterations is None and (atol is None or rtol is None):
            raise ValueError("give n_iterations, or both atol and rtol, to bound the power iteration")
        self._tolerances = (atol, rtol)
        return (200 if n_iterations is None else n_iterations), n_iterations is None

    def _converged(self, u: torch.Tensor, old_u: torch.Tensor, v: torch.Tensor, old_v: torch.Tensor) -> bool:
        atol, rtol = self._tolerances
        assert atol is not None and rtol is not None  # _iterations stops early only with both
        error_u = torch.norm(u - old_u) / u.nelement() ** 0.5
        error_v = torch.norm(v - old_v) / v.nelement() ** 0.5
        return bool(error_u < atol + rtol * torch.max(u) and error_v < atol + rtol * torch.max(v))

    def _rescaled(self, weight: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.scale.copy_(sigma)
        # normflows' factor max(1, σ/coeff) is a (1,)-tensor of the default dtype: σ (0-dim) takes its
        # dtype by torch's promotion rules, so a float64 layer divides by a float32-rounded factor.
        return weight / torch.max(torch.ones(1, device=weight.device), sigma / self.coeff)


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
        with torch.no_grad():
            domain, codomain = self.compute_domain_codomain()
        self.register_buffer("scale", torch.tensor(0.0))
        self.register_buffer("u", normalize_u(self.weight.new_empty(out_features).normal_(0, 1), codomain))
        self.register_buffer("v", normalize_v(self.weight.new_empty(in_features).normal_(0, 1), domain))
        with torch.no_grad():
            self.compute_weight(True, n_iterations=200, atol=None, rtol=None)
            best = (self.scale.clone(), self.u.clone(), self.v.clone())
            if not (domain == 2 and codomain == 2):  # other norms: the best of ten restarts
                for _ in range(10):
                    self.u = normalize_u(self.weight.new_empty(out_features).normal_(0, 1), codomain)
                    self.v = normalize_v(self.weight.new_empty(in_features).normal_(0, 1), domain)
                    self.compute_weight(True, n_iterations=200)
                    if self.scale > best[0]:
                        best = (best[0], self.u.clone(), self.v.clone())
            self.u.copy_(best[1])
            self.v.copy_(best[2])

    def compute_one_iter(self) -> torch.Tensor:
        """One power iteration from the stored vectors (not stored back): the new ``σ`` estimate."""
        domain, codomain = self.compute_domain_codomain()
        weight = self.weight.detach()
        u = normalize_u(torch.mv(weight, self.v.detach()), codomain)
        v = normalize_v(torch.mv(weight.t(), u), domain)
        return torch.dot(u, torch.mv(weight, v))

    def compute_weight(
        self, update: bool = True, n_iterations: int | None = None, atol: float | None = None, rtol: float | None = None
    ) -> torch.Tensor:
        """``W̃``; with ``update``, first advance and store ``u, v`` (``n_iterations``, or until the tolerances)."""
        u, v, weight = self.u, self.v, self.weight
        if update:
            steps, early = self._iterations(n_iterations, atol, rtol)
            with torch.no_grad():
                domain, codomain = self.compute_domain_codomain()
                for _ in range(steps):
                    old_u, old_v = u.clone(), v.clone()
                    u = normalize_u(torch.mv(weight, v), codomain, out=u)
                    v = normalize_v(torch.mv(weight.t(), u), domain, out=v)
                    if early and self._converged(u, old_u, v, old_v):
                        break
                self.v.copy_(v)
                self.u.copy_(u)
                u, v = u.clone(), v.clone()
        return self._rescaled(weight, torch.dot(u, torch.mv(weight, v)))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.compute_weight(update=False), self.bias)

    def extra_repr(self) -> str:
        domain, codomain = self.compute_domain_codomain()
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"coeff={self.coeff}, domain={float(domain):.2f}, codomain={float(codomain):.2f}, "
            f"n_iters={self.n_iterations}, atol={self.atol}, rtol={self.rtol}, "
            f"learnable_ord={torch.is_tensor(self.domain)}"
        )


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

    def _input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_channels, int(self.spatial_dims[0].item()), int(self.spatial_dims[1].item()))

    def _conv(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(v.view(self._input_shape()), weight, stride=self.stride, padding=self.padding)

    def _sizes(self) -> tuple[int, int]:
        """The lengths of ``v`` and ``u``: the channels for a 1×1 kernel, else the flattened input
        (of the spatial size seen first) and output."""
        if self._one_by_one:
            return self.in_channels, self.out_channels
        inputs = self.in_channels * int(self.spatial_dims.prod().item())
        return inputs, self._conv(self.weight.new_zeros(inputs), self.weight).numel()

    @torch.no_grad()
    def _initialize_u_v(self) -> None:
        # The draws come in normflows' order (a seed gives normflows' vectors): u then v for a 1×1
        # kernel, v then u otherwise; restarts (norms other than 2) draw u then v, as float32
        # ``randn`` for larger kernels.
        domain, codomain = self.compute_domain_codomain()
        inputs, outputs = self._sizes()
        for name in ("u", "v") if self._one_by_one else ("v", "u"):
            vector = getattr(self, name)
            vector.resize_(outputs if name == "u" else inputs).normal_(0, 1)
            vector.copy_(normalize_u(vector, codomain) if name == "u" else normalize_v(vector, domain))
        self.initialized.fill_(1)
        self.compute_weight(True)
        best = (self.scale.clone(), self.u.clone(), self.v.clone())
        if not (domain == 2 and codomain == 2):
            for _ in range(10):
                if self._one_by_one:
                    u, v = self.weight.new_empty(outputs).normal_(0, 1), self.weight.new_empty(inputs).normal_(0, 1)
                else:
                    u, v = torch.randn(outputs).to(self.weight), torch.randn(inputs).to(self.weight)
                self.u.copy_(normalize_u(u, codomain))
                self.v.copy_(normalize_v(v, domain))
                self.compute_weight(True, n_iterations=200)
                if self.scale > best[0]:
                    best = (best[0], self.u.clone(), self.v.clone())
        self.u.copy_(best[1])
        self.v.copy_(best[2])

    def _step(self, u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor, out: bool) -> tuple[torch.Tensor, ...]:
        """One power iteration ``u ← N_u(Wv)``, ``v ← N_v(Wᵀu)`` (in place when ``out``)."""
        domain, codomain = self.compute_domain_codomain()
        if self._one_by_one:
            matrix = weight.view(self.out_channels, self.in_channels)
            u = normalize_u(torch.mv(matrix, v), codomain, out=u if out else None)
            return u, normalize_v(torch.mv(matrix.t(), u), domain, out=v if out else None)
        image = self._conv(v, weight)
        u = normalize_u(image.view(-1), codomain, out=u if out else None)
        back = F.conv_transpose2d(u.view(image.shape), weight, stride=self.stride, padding=self.padding)
        return u, normalize_v(back.view(-1), domain, out=v if out else None)

    def _sigma(self, u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self._one_by_one:
            return torch.dot(u, torch.mv(weight.view(self.out_channels, self.in_channels), v))
        return torch.dot(u.view(-1), self._conv(v, weight).view(-1))

    def compute_one_iter(self) -> torch.Tensor:
        """One power iteration from the stored vectors (not stored back): the new ``σ`` estimate."""
        if not self.initialized:
            raise ValueError(
                f"{type(self).__name__}: run a forward pass first (the layer sets its spatial size on its first input)"
            )
        weight = self.weight.detach()
        u, v = self._step(self.u.detach(), self.v.detach(), weight, out=False)
        return self._sigma(u, v, weight)

    def compute_weight(
        self, update: bool = True, n_iterations: int | None = None, atol: float | None = None, rtol: float | None = None
    ) -> torch.Tensor:
        """The rescaled kernel; with ``update``, first advance ``u, v``. As in normflows, the advanced
        vectors are stored back only for norms other than 2 (for the 2-norm the ``out=`` steps of
        ``F.normalize`` update them in place)."""
        if not self.initialized:
            self._initialize_u_v()
        u, v, weight = self.u, self.v, self.weight
        if update:
            steps, early = self._iterations(n_iterations, atol, rtol)
            with torch.no_grad():
                domain, codomain = self.compute_domain_codomain()
                used = 0
                for _ in range(steps):
                    old_u, old_v = u.clone(), v.clone()
                    u, v = self._step(u, v, weight, out=True)
                    used += 1
                    if early and self._converged(u, old_u, v, old_v):
                        break
                if used:
                    keep_v = domain not in (1, 2) if self._one_by_one else domain != 2
                    keep_u = codomain not in (2, float("inf")) if self._one_by_one else codomain != 2
                    if keep_v:
                        self.v.copy_(v)
                    if keep_u:
                        self.u.copy_(u)
                    u, v = u.clone(), v.clone()
        return self._rescaled(weight, self._sigma(u, v, weight))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            self.spatial_dims.copy_(torch.tensor(input.shape[2:4]).to(self.spatial_dims))
        weight = self.compute_weight(update=False)
        return F.conv2d(input, weight, self.bias, self.stride, self.padding, 1, 1)

    def extra_repr(self) -> str:
        domain, codomain = self.compute_domain_codomain()
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.bias is None:
            text += ", bias=False"
        return text + (
            f", coeff={self.coeff}, domain={float(domain):.2f}, codomain={float(codomain):.2f}, "
            f"n_iters={self.n_iterations}, atol={self.atol}, rtol={self.rtol}, "
            f"learnable_ord={torch.is_tensor(self.domain)}"
        )


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
