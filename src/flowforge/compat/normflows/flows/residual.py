r"""normflows' ``nf.flows.residual`` path: ``Residual`` with normflows' argument order and
``state_dict`` layout, and the helpers of that module (``iResBlock``, the log-det estimators and the
distributions of the Russian roulette).

The numerics are flowforge's :class:`~flowforge.flows.Residual`: in training mode the unbiased
Russian-roulette estimate of ``log|det(I + J_g)|``; in evaluation mode a deterministic value (exact
for events of at most 16 coordinates, which covers normflows' exact 2-D evaluation). normflows'
``exact_trace`` (a power series with exact traces) is flowforge's ``brute_force`` (the exact
log-det), and ``reduce_memory`` has no effect (flowforge builds the log-det's graph only when
gradients are needed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ....flows.base import Flow
from ....flows.residual import Residual as NativeResidual

__all__ = [
    "Flow",
    "MemoryEfficientLogDetEstimator",
    "Residual",
    "basic_logdet_estimator",
    "batch_jacobian",
    "batch_trace",
    "geometric_1mcdf",
    "geometric_sample",
    "iResBlock",
    "mem_eff_wrapper",
    "neumann_logdet_estimator",
    "poisson_1mcdf",
    "poisson_sample",
    "safe_detach",
]

_ESTIMATOR_STATE = ("geom_p", "lamb", "last_n_samples", "last_firmom", "last_secmom")


def _logit(p: float) -> float:
    return math.log(p) - math.log(1.0 - p)


def _residual_arguments(reduce_memory: bool, exact_trace: bool, brute_force: bool, **kwargs: Any) -> dict[str, Any]:
    del reduce_memory  # no effect in flowforge
    return {"brute_force": brute_force or exact_trace, **kwargs}


class Residual(NativeResidual):
    r"""normflows' ``Residual(net, reverse=True, reduce_memory=True, geom_p=0.5, lamb=2.0,
    n_power_series=None, exact_trace=False, brute_force=False, n_samples=1, n_exact_terms=2,
    n_dist="geometric")`` on flowforge's :class:`~flowforge.flows.Residual`: ``h(v) = v + net(v)``
    with ``Lip(net) < 1``, applied in ``inverse`` when ``reverse`` (the default) and inverted by
    fixed-point iteration in ``forward``. ``exact_trace`` is ``brute_force`` (exact log-det from the
    full Jacobian); ``reduce_memory`` has no effect. Its ``state_dict`` is normflows':
    ``iresblock.nnet.*`` for the net and the estimator's ``iresblock.geom_p`` (a logit),
    ``iresblock.lamb`` and the statistics buffers ``iresblock.last_*`` (saved as zeros: flowforge does
    not record them; ``geom_p`` and ``lamb`` are read back on loading).
    """

    def __init__(
        self,
        net: nn.Module,
        reverse: bool = True,
        reduce_memory: bool = True,
        geom_p: float = 0.5,
        lamb: float = 2.0,
        n_power_series: int | None = None,
        exact_trace: bool = False,
        brute_force: bool = False,
        n_samples: int = 1,
        n_exact_terms: int = 2,
        n_dist: str = "geometric",
    ):
        super().__init__(
            net,
            reverse,
            **_residual_arguments(
                reduce_memory, exact_trace, brute_force, geom_p=geom_p, lamb=lamb, n_power_series=n_power_series,
                n_samples=n_samples, n_exact_terms=n_exact_terms, n_dist=n_dist,
            ),
        )  # fmt: skip
        self._register_state_dict_hook(_save_residual)
        self._register_load_state_dict_pre_hook(self._load_residual)

    def _load_residual(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        block = prefix + "iresblock."
        for key in [key for key in state if key.startswith(block)]:
            name = key[len(block) :]
            value = state.pop(key)
            if name.startswith("nnet."):
                state[prefix + "net." + name[len("nnet.") :]] = value
            elif name == "geom_p":
                self.geom_p = float(torch.sigmoid(torch.as_tensor(value, dtype=torch.float64)))
            elif name == "lamb":
                self.lamb = float(value)
            elif name not in _ESTIMATOR_STATE:
                state[key] = value  # not normflows': left for load_state_dict to report


def _save_residual(module: Residual, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [key for key in state if key.startswith(prefix + "net.")]:
        state[prefix + "iresblock.nnet." + key[len(prefix + "net.") :]] = state.pop(key)
    block = prefix + "iresblock."
    # normflows' estimator state, on the net's device and (but for geom_p, a float64 in normflows) dtype
    reference = next(module.parameters(), None)
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    device = reference.device if reference is not None else None
    state[block + "geom_p"] = torch.tensor(_logit(module.geom_p), dtype=torch.float64, device=device)
    state[block + "lamb"] = torch.tensor(module.lamb, dtype=dtype, device=device)
    state[block + "last_n_samples"] = torch.zeros(module.n_samples, dtype=dtype, device=device)
    state[block + "last_firmom"] = torch.zeros(1, dtype=dtype, device=device)
    state[block + "last_secmom"] = torch.zeros(1, dtype=dtype, device=device)


class iResBlock(nn.Module):  # noqa: N801 (normflows' name)
    r"""normflows' ``iResBlock(nnet, geom_p=0.5, lamb=2.0, n_power_series=None, exact_trace=False,
    brute_force=False, n_samples=1, n_exact_terms=2, n_dist="geometric", neumann_grad=True,
    grad_in_forward=False)``: the block ``y = x + nnet(x)`` with ``forward(x, logpx=None)`` (returns
    ``y``, or ``(y, logpx − log|det ∂y/∂x|)``) and ``inverse(y, logpy=None)`` (fixed-point iteration;
    ``(x, logpy + log|det ∂y/∂x|)``), the log-det estimated as in :class:`Residual`. Its parameters
    and buffers are normflows' (``nnet``, ``geom_p``, ``lamb``, ``last_*``)."""

    def __init__(
        self,
        nnet: nn.Module,
        geom_p: float = 0.5,
        lamb: float = 2.0,
        n_power_series: int | None = None,
        exact_trace: bool = False,
        brute_force: bool = False,
        n_samples: int = 1,
        n_exact_terms: int = 2,
        n_dist: str = "geometric",
        neumann_grad: bool = True,
        grad_in_forward: bool = False,
    ):
        super().__init__()
        self.nnet = nnet
        self.geom_p = nn.Parameter(torch.tensor(_logit(geom_p), dtype=torch.float64))
        self.lamb = nn.Parameter(torch.tensor(lamb))
        self.n_samples, self.n_power_series, self.n_dist = n_samples, n_power_series, n_dist
        self.exact_trace, self.brute_force, self.n_exact_terms = exact_trace, brute_force, n_exact_terms
        self.neumann_grad, self.grad_in_forward = neumann_grad, grad_in_forward
        self.register_buffer("last_n_samples", torch.zeros(n_samples))
        self.register_buffer("last_firmom", torch.zeros(1))
        self.register_buffer("last_secmom", torch.zeros(1))

    def _layer(self) -> NativeResidual:
        layer = NativeResidual(
            self.nnet, False, geom_p=float(torch.sigmoid(self.geom_p.detach())), lamb=float(self.lamb),
            n_power_series=self.n_power_series, brute_force=self.brute_force or self.exact_trace,
            n_samples=self.n_samples, n_exact_terms=self.n_exact_terms, n_dist=self.n_dist,
        )  # fmt: skip
        return layer.train(self.training)

    def forward(self, x: torch.Tensor, logpx: torch.Tensor | float | None = None) -> Any:
        if logpx is None:
            return x + self.nnet(x)
        y, log_det = self._layer()(x)
        return y, logpx - log_det.view(-1, 1)

    def inverse(self, y: torch.Tensor, logpy: torch.Tensor | float | None = None) -> Any:
        x, minus_log_det = self._layer().inverse(y)
        return x if logpy is None else (x, logpy - minus_log_det.view(-1, 1))


def batch_jacobian(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The Jacobians ``∂g_i/∂x_j`` of a row-wise map, shape ``(batch, d_out, d_in)``, for ``g`` computed
    from ``x`` (``(batch, d)``) with autograd (one backward pass per output coordinate; the graph is kept)."""
    rows = [
        torch.autograd.grad(g[:, i].sum(), x, create_graph=True)[0].reshape(x.shape[0], 1, -1)
        for i in range(g.shape[1])
    ]
    return torch.cat(rows, 1)


def batch_trace(M: torch.Tensor) -> torch.Tensor:  # noqa: N803 (normflows' parameter name)
    """The traces of a batch of square matrices ``(batch, d, d)``."""
    return torch.diagonal(M, dim1=1, dim2=2).sum(1)


def basic_logdet_estimator(
    g: torch.Tensor, x: torch.Tensor, n_power_series: int, vareps: torch.Tensor,
    coeff_fn: Callable[[int], float], training: bool,
) -> torch.Tensor:  # fmt: skip
    r"""Hutchinson estimate of ``Σ_{k=1}^{n} (−1)^{k+1} c(k) εᵀ J^k ε / k`` (``J = ∂g/∂x``, probe ``vareps``),
    by ``n`` vector-Jacobian products; differentiable when ``training``."""
    product, total = vareps, x.new_zeros(x.shape[0])
    for k in range(1, n_power_series + 1):
        (product,) = torch.autograd.grad(g, x, product, create_graph=training, retain_graph=True)
        trace = (product.reshape(x.shape[0], -1) * vareps.reshape(x.shape[0], -1)).sum(1)
        total = total + (-1) ** (k + 1) / k * coeff_fn(k) * trace
    return total


def neumann_logdet_estimator(
    g: torch.Tensor, x: torch.Tensor, n_power_series: int, vareps: torch.Tensor,
    coeff_fn: Callable[[int], float], training: bool,
) -> torch.Tensor:  # fmt: skip
    r"""The same estimate whose gradient is that of the Neumann series (Chen et al. 2019):
    ``εᵀ (Σ_{k=0}^{n} (−1)^k c(k) J^k) J ε`` with the series built without a graph and one
    differentiable product (when ``training``)."""
    product, series = vareps, vareps
    with torch.no_grad():
        for k in range(1, n_power_series + 1):
            (product,) = torch.autograd.grad(g, x, product, retain_graph=True)
            series = series + (-1) ** k * coeff_fn(k) * product
    (last,) = torch.autograd.grad(g, x, series, create_graph=training)
    return (last.reshape(x.shape[0], -1) * vareps.reshape(x.shape[0], -1)).sum(1)


class MemoryEfficientLogDetEstimator(torch.autograd.Function):
    r"""normflows' autograd function that computes ``g = gnet(x)`` and the log-det estimate together
    and, in training, takes the log-det's gradients (w.r.t. ``x`` and ``gnet``'s parameters) already
    in the forward pass, so its graph is freed before the backward pass (Chen et al. 2019). The
    backward pass scales those stored gradients by the incoming gradient of the first row's log-det
    (as normflows: the loss must weight every row's log-det alike, e.g. a mean) and adds ``g``'s
    vector-Jacobian product. Call it through :func:`mem_eff_wrapper`."""

    @staticmethod
    def forward(
        ctx: Any, estimator_fn: Callable[..., torch.Tensor], gnet: nn.Module, x: torch.Tensor, n_power_series: int,
        vareps: torch.Tensor, coeff_fn: Callable[[int], float], training: bool, *g_params: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        ctx.training = training
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            g = gnet(x)
            ctx.g, ctx.x = g, x
            log_det = estimator_fn(g, x, n_power_series, vareps, coeff_fn, training)
            if training:
                grad_x, *grad_params = torch.autograd.grad(
                    log_det.sum(), (x, *g_params), retain_graph=True, allow_unused=True
                )
                ctx.save_for_backward(torch.zeros_like(x) if grad_x is None else grad_x, *g_params, *grad_params)
        return safe_detach(g), safe_detach(log_det)

    @staticmethod
    def backward(ctx: Any, grad_g: torch.Tensor, grad_log_det: torch.Tensor) -> tuple[Any, ...]:
        if not ctx.training:
            raise ValueError("MemoryEfficientLogDetEstimator: backward needs training=True in the forward pass")
        grad_x, *rest = ctx.saved_tensors
        params, grad_params = rest[: len(rest) // 2], rest[len(rest) // 2 :]
        with torch.enable_grad():
            dg_x, *dg_params = torch.autograd.grad(ctx.g, [ctx.x, *params], grad_g, allow_unused=True)
        weight = grad_log_det[0].detach()
        total_x = grad_x * weight + (0 if dg_x is None else dg_x)
        totals = []
        for from_g, from_log_det in zip(dg_params, grad_params, strict=True):
            scaled = None if from_log_det is None else from_log_det * weight
            totals.append(scaled if from_g is None else (from_g if scaled is None else from_g + scaled))
        return (None, None, total_x, None, None, None, None, *totals)


def mem_eff_wrapper(
    estimator_fn: Callable[..., torch.Tensor], gnet: nn.Module, x: torch.Tensor, n_power_series: int,
    vareps: torch.Tensor, coeff_fn: Callable[[int], float], training: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(gnet(x), estimator_fn(...))`` through :class:`MemoryEfficientLogDetEstimator` (the log-det's
    gradients taken in the forward pass)."""
    if not isinstance(gnet, nn.Module):
        raise ValueError(f"gnet must be an nn.Module, got {type(gnet).__name__}")
    return MemoryEfficientLogDetEstimator.apply(
        estimator_fn, gnet, x, n_power_series, vareps, coeff_fn, training, *gnet.parameters()
    )


def geometric_sample(p: float, n_samples: int) -> np.ndarray:
    """``n_samples`` draws of a geometric distribution on ``{1, 2, …}`` (numpy's generator)."""
    return np.random.geometric(p, n_samples)


def geometric_1mcdf(p: float, k: int, offset: int) -> float:
    """``P(N ≥ k − offset)`` for ``N ~ Geometric(p)`` on ``{1, 2, …}``; 1 for ``k ≤ offset``."""
    if k <= offset:
        return 1.0
    return (1 - p) ** max(k - offset - 1, 0)


def poisson_sample(lamb: float, n_samples: int) -> np.ndarray:
    """``n_samples`` draws of a Poisson(``lamb``) distribution (numpy's generator)."""
    return np.random.poisson(lamb, n_samples)


def poisson_1mcdf(lamb: float, k: int, offset: int) -> float:
    """``P(N ≥ k − offset)`` for ``N ~ Poisson(lamb)``; 1 for ``k ≤ offset``."""
    if k <= offset:
        return 1.0
    below = sum(lamb**i / math.factorial(i) for i in range(0, k - offset))
    return float(1 - np.exp(-lamb) * below)


def safe_detach(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` detached from its graph, keeping its ``requires_grad`` flag."""
    return tensor.detach().requires_grad_(tensor.requires_grad)
