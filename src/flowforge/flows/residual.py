"""Residual flows: ``x + g(x)`` with ``Lip(g) < 1`` (i-ResNet, Residual Flows)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..utils.deprecation import retired_keywords
from .base import Flow

RETIRED_KEYWORDS = {
    "reduce_memory": "it has no effect in flowforge (the log-det's graph is built only when gradients are needed)",
    "exact_trace": "it is brute_force",
}


class Residual(Flow):
    r"""Invertible residual block ``h(v) = v + g(v)`` with ``Lip(g) < 1`` (Behrmann et al. 2019,
    https://arxiv.org/abs/1811.00995; Chen et al. 2019, https://arxiv.org/abs/1906.02735).

    ``log|det ∂h/∂v| = Σ_{k≥1} (−1)^{k+1} tr(J_g^k)/k``, estimated without bias by a Russian
    roulette over the number of terms (``n_exact_terms`` always, then a geometric(``geom_p``) or
    Poisson(``lamb``) number more, each reweighted by its survival probability) with
    ``n_samples`` Hutchinson vectors. The geometric estimator's variance is finite when
    ``(1 − geom_p)⁻¹ Lip(g)² < 1``; the Poisson one reweights by ``~k!/λᵏ`` and is heavy-tailed.
    ``n_power_series`` instead truncates the series (biased);
    ``brute_force`` computes the exact log-det from the full Jacobian (D backward passes, for low
    dimensions).

    The random estimator is for training only (an unbiased gradient signal). In evaluation mode
    (``.eval()``) the log-det is deterministic, so repeated ``log_prob`` calls agree to the bit:
    exact, ``slogdet(I + J_g)`` of the full Jacobian (``D`` backward passes), when the event has
    ``D ≤ eval_exact_max_dim`` coordinates (16 by default); otherwise the power series truncated at
    ``n_power_series`` terms, or ``eval_terms`` (20) when that is None, with ``n_samples`` Gaussian
    probes drawn from a generator seeded with :attr:`EVAL_SEED`: the same probes on every call and
    for every row, so a point's log-density depends neither on the call nor on the batch it is in
    (the global random state is neither used nor advanced). This is a fixed Hutchinson estimate, not
    the exact value: the truncation adds at most ``D Σ_{k>K} Lip(g)^k / k`` (≈ ``D · 8e-5`` for
    ``K = 20`` and ``Lip(g) = 0.7``), and the probes an error that shrinks as ``1/√n_samples`` (a
    fraction of a nat per layer for one probe on 20 coordinates). It costs ``K · n_samples``
    vector-Jacobian products per layer, against about 3–4 for the training estimator.

    Direction: with ``reverse=True`` (default, as normflows) ``h`` is the density direction
    (``inverse``) and sampling solves ``v + g(v) = z`` by fixed-point iteration to ``tolerance``
    (contraction, so it converges); otherwise ``h`` is ``forward``. The fixed-point solution is
    differentiated exactly: the incoming gradient is mapped through ``(I + J_g)^{-T}`` by the
    same iteration on the adjoint equation.

    The map never changes between parameter updates (spectral norms are exact, or estimates
    advanced only by :func:`flowforge.nets.update_lipschitz`), so forward and inverse stay
    exact inverses and ``sample`` agrees with ``log_prob``. A net that declares ``in_features``
    (as :class:`~flowforge.nets.LipschitzMLP` does) has its input width checked. The arguments after
    ``reverse`` are keyword-only.
    """

    EVAL_SEED = 0  # seed of the fixed probes of the evaluation-mode estimate

    def __init__(
        self,
        net: nn.Module,
        reverse: bool = True,
        *,
        geom_p: float = 0.5,
        lamb: float = 2.0,
        n_power_series: int | None = None,
        brute_force: bool = False,
        n_samples: int = 1,
        n_exact_terms: int = 2,
        n_dist: str = "geometric",
        tolerance: float | None = None,
        max_iterations: int = 1000,
        eval_exact_max_dim: int = 16,
        eval_terms: int = 20,
        **retired,
    ):
        super().__init__()
        retired_keywords("flows.Residual", retired, RETIRED_KEYWORDS)
        brute_force = brute_force or bool(retired.get("exact_trace", False))
        if n_dist not in ("geometric", "poisson"):
            raise ValueError(f"n_dist must be 'geometric' or 'poisson', got {n_dist!r}")
        if not 0 < geom_p < 1 or lamb <= 0 or n_samples < 1 or n_exact_terms < 0:
            raise ValueError("need 0 < geom_p < 1, lamb > 0, n_samples >= 1 and n_exact_terms >= 0")
        if eval_exact_max_dim < 0 or eval_terms < 1:
            raise ValueError(
                f"need eval_exact_max_dim >= 0 and eval_terms >= 1, got {eval_exact_max_dim}, {eval_terms}"
            )
        self.net = net
        self.reverse = reverse
        self.geom_p, self.lamb, self.n_dist = geom_p, lamb, n_dist
        self.n_power_series, self.brute_force = n_power_series, brute_force
        self.n_samples, self.n_exact_terms = n_samples, n_exact_terms
        self.tolerance, self.max_iterations = tolerance, max_iterations
        self.eval_exact_max_dim, self.eval_terms = eval_exact_max_dim, eval_terms

    def _survival(self, k: int) -> float:
        """``P(N ≥ k)`` for the random number ``N`` of extra terms."""
        if k <= 0:
            return 1.0
        if self.n_dist == "geometric":
            return (1 - self.geom_p) ** k
        return 1.0 - sum(math.exp(-self.lamb) * self.lamb**j / math.factorial(j) for j in range(k))

    def _extra_terms(self) -> int:
        if self.n_dist == "geometric":
            return int(torch.distributions.Geometric(probs=torch.tensor(self.geom_p)).sample())
        return int(torch.distributions.Poisson(torch.tensor(self.lamb)).sample())

    def _log_det(self, v: torch.Tensor, g: torch.Tensor, create_graph: bool) -> torch.Tensor:
        """``log|det(I + J_g(v))|`` per sample; ``g = net(v)`` computed with ``v`` requiring grad."""
        flat = v.shape[0], -1
        if self.brute_force or (not self.training and v[0].numel() <= self.eval_exact_max_dim):
            rows = []
            g_flat = g.reshape(flat)
            for i in range(g_flat.shape[1]):
                (row,) = torch.autograd.grad(g_flat[:, i].sum(), v, retain_graph=True, create_graph=create_graph)
                rows.append(row.reshape(flat))
            jacobian = torch.stack(rows, 1)
            identity = torch.eye(jacobian.shape[1], dtype=v.dtype, device=v.device)
            return torch.linalg.slogdet(identity + jacobian)[1]
        if self.training:  # unbiased: Russian roulette over the terms, fresh probes
            terms = self.n_power_series or self.n_exact_terms + self._extra_terms()
            reweight = self.n_power_series is None
            generator = None
        else:  # deterministic: fixed truncation, fixed probes
            terms, reweight = self.n_power_series or self.eval_terms, False
            generator = torch.Generator(device=v.device).manual_seed(self.EVAL_SEED)
        total = v.new_zeros(v.shape[0])
        for _ in range(self.n_samples):
            if generator is None:
                probe = torch.randn_like(v)
            else:
                # one probe shared by every row: a point's density does not depend on its batch
                probe = torch.randn(v.shape[1:], generator=generator, dtype=v.dtype, device=v.device).expand_as(v)
            product = probe
            for k in range(1, terms + 1):
                (product,) = torch.autograd.grad(g, v, product, retain_graph=True, create_graph=create_graph)
                weight = 1.0 / self._survival(k - self.n_exact_terms) if reweight else 1.0
                total = total + ((-1) ** (k + 1) / k * weight) * (product * probe).reshape(flat).sum(1)
        return total / self.n_samples

    def _check(self, v: torch.Tensor) -> None:
        width = getattr(self.net, "in_features", None)
        if width is not None and (v.dim() != 2 or v.shape[1] != width):
            raise ValueError(f"Residual expects input of shape (batch, {width}), got {tuple(v.shape)}")

    def _residual(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # Differentiate at a fresh node: v may carry the adjoint hook of a fixed-point solve,
            # which must shape gradients flowing into v but not this Jacobian.
            v_in = v.clone() if v.requires_grad else v.detach().requires_grad_()
            g = self.net(v_in)
            if g.shape != v.shape:
                raise ValueError(f"Residual: net returned shape {tuple(g.shape)} for input of shape {tuple(v.shape)}")
            log_det = self._log_det(v_in, g, create_graph)
        out = v_in + g if create_graph else (v + g).detach()
        return out, log_det if create_graph else log_det.detach()

    def _solve(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve ``v + g(v) = y``; return ``v`` and ``−log|det(I + J_g(v))|``."""
        tolerance = self.tolerance or (1e-10 if y.dtype == torch.float64 else 1e-6)
        with torch.no_grad():
            target, v = y.detach(), y.detach()
            for _ in range(self.max_iterations):
                step = target - self.net(v)
                if float((step - v).abs().max()) < tolerance:
                    v = step
                    break
                v = step
        v_out = y - self.net(v) if torch.is_grad_enabled() else v
        if v_out.requires_grad:
            v_out.register_hook(lambda gradient: self._adjoint(v, gradient, tolerance))
        _, log_det = self._residual(v_out if v_out.requires_grad else v)
        return v_out, -log_det

    def _adjoint(self, v: torch.Tensor, gradient: torch.Tensor, tolerance: float) -> torch.Tensor:
        """``w = (I + J_g(v))^{-T} gradient`` by iterating ``w ← gradient − J_gᵀ w``."""
        with torch.enable_grad():
            v_in = v.detach().requires_grad_()
            g = self.net(v_in)
            w = gradient
            for _ in range(self.max_iterations):
                (vjp,) = torch.autograd.grad(g, v_in, w, retain_graph=True)
                updated = gradient - vjp
                if float((updated - w).abs().max().detach()) < tolerance:
                    return updated
                w = updated
        return w

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        return self._solve(z) if self.reverse else self._residual(z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        return self._residual(x) if self.reverse else self._solve(x)
