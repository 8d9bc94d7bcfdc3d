r"""Flow Annealed Importance Sampling Bootstrap (FAB; Midgley et al. 2023, https://arxiv.org/abs/2208.01893).

FAB trains a flow ``q`` to an unnormalised density ``p̃`` by the mass-covering α-divergence with α = 2,
``D₂(p‖q) ∝ ∫ p²/q``, whose gradient is ``−E_{p²/q}[∇ log q]``. The expectation is estimated with
annealed importance sampling (AIS) from the flow towards ``p̃²/q`` (:func:`~flowforge.mcmc.annealed_importance_sampling`
with ``alpha=2``): the distribution that minimises the variance of the importance estimate, which puts
samples where the flow misses mass of the target. The loss of a batch of AIS samples ``xᵢ`` with
self-normalised weights ``w̄ᵢ`` is ``−Σᵢ w̄ᵢ log q(xᵢ)`` (weights and samples held fixed).

With the prioritised replay buffer (the paper's "FAB with buffer") the AIS samples are kept with their
log-weights and the flow's ``log q`` when they were drawn; each step draws a batch from the buffer with
probability proportional to the weights and minimises ``−mean(min(q_old/q, c) · log q)`` (the ratio held
fixed, ``c`` = ``w_adjust_clip``), which corrects for the flow having moved since; the used samples'
log-weights then gain ``log q_old − log q`` and their ``log q_old`` becomes ``log q``. A fresh AIS batch
joins the buffer every ``updates_per_ais`` steps; the oldest samples leave when it is full.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .losses import DensityModel, require_target
from .mcmc import KERNELS, annealed_importance_sampling
from .utils.checks import positive_int


class PrioritisedBuffer:
    """AIS samples with their log-weights and the flow's log-density when drawn, kept up to ``capacity``
    (the oldest leave first), drawn with probability proportional to their weights.

    >>> buffer = PrioritisedBuffer(4)
    >>> buffer.add(torch.zeros(3, 2), torch.tensor([0.0, -50.0, -100.0]), torch.zeros(3))
    >>> buffer.size, sorted(buffer.sample(3).tolist())
    (3, [0, 1, 2])
    """

    def __init__(self, capacity: int) -> None:
        positive_int("capacity", capacity)
        self.capacity, self.size, self.position = capacity, 0, 0
        self.x: torch.Tensor | None = None
        self.log_w: torch.Tensor | None = None
        self.log_q: torch.Tensor | None = None

    def add(self, x: torch.Tensor, log_w: torch.Tensor, log_q: torch.Tensor) -> None:
        """Append samples ``x`` ``(n, *event)`` with their log-weights and log-densities ``(n,)``; samples
        with a non-finite value, weight or density are left out."""
        if not (x.shape[0] == log_w.shape[0] == log_q.shape[0]) or log_w.dim() != 1 or log_q.dim() != 1:
            raise ValueError(f"need x (n, ...), log_w (n,) and log_q (n,), got {x.shape}, {log_w.shape}, {log_q.shape}")
        valid = torch.isfinite(log_w) & torch.isfinite(log_q) & torch.isfinite(x.flatten(1)).all(1)
        x, log_w, log_q = x[valid], log_w[valid], log_q[valid]
        if self.x is None:
            self.x = x.new_zeros((self.capacity, *x.shape[1:]))
            self.log_w = log_w.new_full((self.capacity,), -math.inf, dtype=torch.float64)
            self.log_q = log_q.new_zeros((self.capacity,), dtype=torch.float64)
        assert self.log_w is not None and self.log_q is not None
        index = (self.position + torch.arange(x.shape[0], device=self.log_w.device)) % self.capacity
        self.x[index], self.log_w[index], self.log_q[index] = x.detach(), log_w.double(), log_q.detach().double()
        self.position = (self.position + x.shape[0]) % self.capacity
        self.size = min(self.size + x.shape[0], self.capacity)

    def sample(self, n: int) -> torch.Tensor:
        """``n`` distinct indices drawn with probability proportional to the weights, successively without
        replacement (the Gumbel top-k trick in log space, so that weights spread over many orders of
        magnitude do not underflow; torch's generator)."""
        if self.log_w is None or self.size < n:
            raise ValueError(f"the buffer holds {self.size} samples, fewer than the {n} asked for")
        log_w = self.log_w[: self.size]
        gumbel = -torch.log(-torch.log(torch.rand_like(log_w).clamp_min(torch.finfo(log_w.dtype).tiny)))
        return torch.topk(log_w + gumbel, n).indices

    def adjust(self, index: torch.Tensor, log_w_adjust: torch.Tensor, log_q: torch.Tensor) -> None:
        """Add ``log_w_adjust`` to the log-weights of the samples ``index`` and record their new ``log_q``
        (where both are finite; the others are kept as they were)."""
        assert self.log_w is not None and self.log_q is not None
        adjust, log_q = log_w_adjust.detach().double(), log_q.detach().double()
        valid = torch.isfinite(adjust) & torch.isfinite(log_q)
        self.log_w[index[valid]] += adjust[valid]
        self.log_q[index[valid]] = log_q[valid]

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "size": self.size, "position": self.position, "x": self.x,
                "log_w": self.log_w, "log_q": self.log_q}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"a buffer of capacity {state['capacity']} does not load into one of {self.capacity}")
        self.size, self.position = int(state["size"]), int(state["position"])
        self.x, self.log_w, self.log_q = state["x"], state["log_w"], state["log_q"]


class FAB:
    """The FAB loss for :func:`~flowforge.training.fit` (``loss="fab"``): AIS from the flow towards
    ``p̃²/q`` and the α = 2 objective, with the prioritised replay buffer by default.

    Each AIS run draws ``num_samples`` samples and moves them through ``num_temperatures`` temperatures
    with the ``kernel`` (``"hmc"``: ``leapfrog_steps`` leapfrog steps; ``"mh"``), one shared step size
    adapted towards the kernel's acceptance target and carried from run to run. With ``replay`` the
    buffer holds ``buffer_batches`` batches, training starts once it holds ``min_buffer_batches``, and a
    new AIS batch joins it every ``updates_per_ais`` steps; without it every step runs AIS. The model must
    have a target (``p=``) and a cheap density (``log_prob`` at the AIS samples).

    ``loss(model, beta, context=None)`` returns the step's loss; ``beta`` is ignored (FAB is not
    annealed). The object keeps the buffer and the step size: :meth:`state_dict` is what a training state
    saves, so a resumed fit continues where it stopped.
    """

    name = "fab"
    needs_data = False
    compilable = False
    """AIS runs inside the step, so the step is not compiled"""
    state_keys = ("step_size", "steps", "ais_runs")
    """what changes as it trains (in :meth:`state_dict`, not among the settings a resumed fit must share)"""

    def __init__(
        self,
        num_samples: int = 128,
        num_temperatures: int = 2,
        kernel: str = "hmc",
        step_size: float = 0.01,
        leapfrog_steps: int = 5,
        replay: bool = True,
        buffer_batches: int = 400,
        min_buffer_batches: int = 40,
        updates_per_ais: int = 4,
        w_adjust_clip: float = 10.0,
    ) -> None:
        for label, value in (
            ("num_samples", num_samples), ("num_temperatures", num_temperatures), ("leapfrog_steps", leapfrog_steps),
            ("buffer_batches", buffer_batches), ("min_buffer_batches", min_buffer_batches),
            ("updates_per_ais", updates_per_ais),
        ):  # fmt: skip
            positive_int(label, value)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if not step_size > 0 or not w_adjust_clip > 0:
            raise ValueError(f"step_size and w_adjust_clip must be positive, got {step_size} and {w_adjust_clip}")
        if min_buffer_batches > buffer_batches:
            raise ValueError(f"min_buffer_batches ({min_buffer_batches}) exceeds buffer_batches ({buffer_batches})")
        self.num_samples, self.num_temperatures, self.kernel = num_samples, num_temperatures, kernel
        self.step_size, self.leapfrog_steps, self.replay = step_size, leapfrog_steps, replay
        self.min_buffer_batches, self.updates_per_ais, self.w_adjust_clip = (
            min_buffer_batches, updates_per_ais, w_adjust_clip,
        )  # fmt: skip
        self.buffer_batches = buffer_batches
        self.buffer = PrioritisedBuffer(buffer_batches * num_samples)
        self.steps = 0
        self.ais_runs = 0

    def beta(self, iteration: int) -> float:
        return 1.0

    def ais(self, model: DensityModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One AIS run from the flow towards ``p̃²/q``: samples, log-weights and the flow's log-density there."""
        run = annealed_importance_sampling(
            model, require_target(model), self.num_samples, self.num_temperatures, self.kernel,  # type: ignore[arg-type]
            step_size=self.step_size, leapfrog_steps=self.leapfrog_steps, alpha=2.0,
        )  # fmt: skip
        self.step_size = run.step_size
        self.ais_runs += 1
        with torch.no_grad():
            log_q = model.log_prob(run.samples)
        return run.samples, run.log_weights, log_q

    def __call__(
        self, model: DensityModel, beta: float | torch.Tensor = 1.0, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        if context is not None:
            raise ValueError("FAB trains unconditional flows; fit it without a context")
        self.steps += 1
        if not self.replay:
            x, log_w, _ = self.ais(model)
            weights = torch.softmax(log_w, 0).to(x.dtype)
            return -(weights * model.log_prob(x)).sum()
        while self.buffer.size < self.min_buffer_batches * self.num_samples:
            self.buffer.add(*self.ais(model))
        if (self.steps - 1) % self.updates_per_ais == 0 and self.steps > 1:
            self.buffer.add(*self.ais(model))
        assert self.buffer.x is not None and self.buffer.log_q is not None
        index = self.buffer.sample(self.num_samples)
        x, log_q_old = self.buffer.x[index], self.buffer.log_q[index]
        log_q = model.log_prob(x)
        log_w_adjust = log_q_old - log_q.detach().double()  # (1 − α)(log q − log q_old) with α = 2
        weight = torch.exp(log_w_adjust).clamp(max=self.w_adjust_clip).to(log_q.dtype)
        self.buffer.adjust(index, log_w_adjust, log_q)
        return -(weight * log_q).mean()

    def state_dict(self) -> dict[str, Any]:
        """The buffer, the adapted step size and the counters."""
        return {"buffer": self.buffer.state_dict(), "step_size": self.step_size, "steps": self.steps,
                "ais_runs": self.ais_runs}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.step_size, self.steps, self.ais_runs = (
            float(state["step_size"]),
            int(state["steps"]),
            int(state["ais_runs"]),
        )
