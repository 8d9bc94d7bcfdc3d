"""The model: a base distribution pushed through a stack of flows, with its losses.

``x = f_K ∘ … ∘ f_1(z₀)``, ``z₀ ~ q0`` and ``log q(x) = log q0(z₀) − Σₖ log|det ∂fₖ/∂z|``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .distributions.base import BaseDistribution
from .distributions.conditional import class_labels
from .flows.base import Flow, pull_back, push_forward


@contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Stop gradients to ``module``'s parameters for the duration (restoring their flags)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class NormalizingFlow(nn.Module):
    """A normalizing flow model ``q`` with an optional target density ``p``.

    Args:
        q0: base distribution; ``q0(n)`` returns ``(z, log q0(z))``.
        flows: flow layers, applied in order in the sampling (``forward``) direction.
        p: optional target with ``log_prob`` (possibly unnormalised), needed by the
            reverse-KL and α-divergence losses.

    The call forms follow normflows, so scripts written for it run unchanged.
    """

    def __init__(self, q0: BaseDistribution, flows: Iterable[Flow], p: nn.Module | None = None):
        super().__init__()
        self.q0 = q0
        self.flows = nn.ModuleList(flows)
        self.p = p

    def forward_and_log_det(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map base samples to data space; returns ``(x, log|det ∂x/∂z|)``."""
        return push_forward(self.flows, z)

    def inverse_and_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map data to the base space; returns ``(z, log|det ∂z/∂x|)``."""
        return pull_back(self.flows, x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map base samples to data space (sampling direction)."""
        return self.forward_and_log_det(z)[0]

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Map data to the base space (density direction)."""
        return self.inverse_and_log_det(x)[0]

    def sample(self, num_samples: int = 1, temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``num_samples`` samples; returns ``(x, log q(x))``. ``temperature`` ``T`` scales the
        Gaussian base's standard deviation by ``T`` (Kingma & Dhariwal 2018); the returned
        log-density is then the tempered model's, computed without gradients."""
        if temperature is not None:  # tempered samples are for looking at: no gradients
            with torch.no_grad(), _tempered([self.q0], temperature):
                return self.sample(num_samples)
        z, log_q = self.q0(num_samples)
        x, log_det = push_forward(self.flows, z)
        return x, log_q - log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log q(x)`` for a batch ``x``, shape ``(batch,)``."""
        z, log_det = self.inverse_and_log_det(x)
        return self.q0.log_prob(z) + log_det

    def forward_kld(self, x: torch.Tensor) -> torch.Tensor:
        """Forward KL ``KL(p‖q)`` up to a constant: ``−mean log q(x)`` for samples ``x ~ p``."""
        return -self.log_prob(x).mean()

    def _require_target(self) -> nn.Module:
        if self.p is None:
            raise ValueError("this loss needs a target density: build NormalizingFlow(q0, flows, p=target)")
        return self.p

    def _log_q_stopped(self, x: torch.Tensor) -> torch.Tensor:
        """``log q(x)`` with the parameters held fixed but the dependence on ``x`` kept
        (the path derivative used by "sticking the landing" and DReG)."""
        with frozen_parameters(self):
            return self.log_prob(x)

    def reverse_kld(
        self, num_samples: int = 1, beta: float | torch.Tensor = 1.0, score_fn: bool = True
    ) -> torch.Tensor:
        """Reverse KL ``KL(q‖p)`` up to ``log Z``: ``mean(log q(x) − β log p̃(x))``, ``x ~ q``.

        ``beta`` anneals the target (Rezende & Mohamed 2015). ``score_fn=False`` uses the
        "sticking the landing" estimator (Roeder et al. 2017,
        https://arxiv.org/abs/1703.09194): ``log q`` is evaluated with the parameters
        held fixed, which drops the zero-mean score term from the gradient.
        """
        target = self._require_target()
        z, log_q0 = self.q0(num_samples)
        x, log_det = push_forward(self.flows, z)
        log_q = log_q0 - log_det
        if not score_fn:
            log_q = self._log_q_stopped(x)
        log_p = target.log_prob(x)
        loss = log_q.mean() - beta * log_p.mean()
        proposal_log_prob = getattr(self.q0, "proposal_log_prob", None)
        if proposal_log_prob is None:
            return loss
        # A base sampled by accept/reject (ResampledGaussian): its samples carry the proposal's
        # parameters by reparameterisation but not the acceptance's, so the gradient needs the score
        # term E[(f − b) ∇ log s(z)] of the selection factor s = q0/π, with a leave-one-out
        # baseline b. It is added with value 0.
        log_selection = log_q0 - proposal_log_prob(z)
        reward = (log_q - beta * log_p).detach()
        baseline = (reward.sum() - reward) / max(reward.shape[0] - 1, 1)
        term = ((reward - baseline) * log_selection).mean()
        return loss + (term - term.detach())

    def reverse_alpha_div(self, num_samples: int = 1, alpha: float = 1.0, dreg: bool = False) -> torch.Tensor:
        r"""α-divergence between the target and the flow, estimated with ``x ~ q``.

        ``D_α = 1/(α(α−1)) log E_q[(p/q)^α]`` with ``p`` self-normalised by the same
        samples, i.e. ``1/(α(α−1)) (log mean wᵅ − α log mean w)`` with ``w = p̃/q``. It
        is Rényi's divergence ``D_α(p‖q)`` divided by ``α``; its limits are
        ``KL(p‖q)`` at ``α = 1`` (the default, mass-covering) and ``KL(q‖p)`` at ``α = 0``
        (mode-seeking), both handled exactly. Invariant to the scale of ``p̃``.

        ``dreg=True`` returns the same value with the doubly-reparameterised gradient
        (Tucker et al. 2019, https://arxiv.org/abs/1810.04152): the score terms are
        replaced by path derivatives, which lowers the gradient's variance.
        """
        target = self._require_target()
        x, log_q = self.sample(num_samples)
        log_w = target.log_prob(x) - log_q
        value = alpha_divergence(log_w, alpha)
        if not dreg:
            return value
        log_w_path = target.log_prob(x) - self._log_q_stopped(x)
        weights = _dreg_weights(log_w.detach(), alpha)
        surrogate = (weights * log_w_path).sum()
        return value.detach() + surrogate - surrogate.detach()

    def save(self, path: str | os.PathLike) -> None:
        """Save the parameters (``state_dict``) to ``path``."""
        torch.save(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        """Load parameters saved by :meth:`save` into this model (same architecture)."""
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def _log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(values, 0) - math.log(values.shape[0])


def alpha_divergence(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    """The self-normalised α-divergence estimate from log importance weights ``log p̃ − log q``."""
    if alpha == 1.0:
        return (torch.softmax(log_w, 0) * log_w).sum() - _log_mean_exp(log_w)
    if alpha == 0.0:
        return _log_mean_exp(log_w) - log_w.mean()
    return (_log_mean_exp(alpha * log_w) - alpha * _log_mean_exp(log_w)) / (alpha * (alpha - 1.0))


def _dreg_weights(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""Per-sample weights ``gᵢ`` with ``∇D_α ≈ Σᵢ gᵢ ∇_path log wᵢ``.

    For ``L_β = log mean wᵝ`` with normalised weights ``vᵢ = wᵢᵝ/Σwᵝ``, replacing each
    score term by its reparameterised form gives ``∇L_β ≈ Σᵢ β vᵢ(1 − β + β vᵢ) ∇_path log wᵢ``.
    ``D_α = (L_α − α L_1)/(α(α−1))``; at ``α ∈ {0, 1}`` the weights are the limits.
    """
    v1 = torch.softmax(log_w, 0)
    if alpha == 1.0:
        return v1 * v1 - v1 + 2 * v1 * v1 * (log_w - (v1 * log_w).sum())
    if alpha == 0.0:
        return v1 * v1 - 1.0 / log_w.shape[0]
    va = torch.softmax(alpha * log_w, 0)
    return (alpha * va * (1 - alpha + alpha * va) - alpha * v1 * v1) / (alpha * (alpha - 1.0))


def _as_context(context: torch.Tensor | None, rows: int, like: torch.Tensor, owner: object) -> torch.Tensor | None:
    """A context as ``(rows, features)`` in ``like``'s dtype and device. A 1-D context is one context
    for every row; a 2-D one must have ``rows`` rows (no other broadcasting)."""
    if context is None:
        return None
    if not isinstance(context, torch.Tensor) or context.dim() not in (1, 2):
        got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
        raise ValueError(f"{type(owner).__name__}: context must be (features,) or (batch, features), got {got}")
    if context.dim() == 1:
        context = context.unsqueeze(0).expand(rows, -1)
    elif context.shape[0] != rows:
        raise ValueError(
            f"{type(owner).__name__}: context has {context.shape[0]} rows for {rows} samples; "
            "give one row per sample, or a 1-D context for all of them"
        )
    context = context.to(device=like.device, dtype=like.dtype if context.is_floating_point() else context.dtype)
    if context.is_floating_point() and not torch.isfinite(context).all():
        raise ValueError(f"{type(owner).__name__}: context contains NaN or inf")
    return context


def _takes_context(module: nn.Module | None) -> bool:
    return bool(getattr(module, "takes_context", False))


class ConditionalNormalizingFlow(NormalizingFlow):
    r"""A normalizing flow ``q(x | c)`` conditioned on a context vector ``c``.

    The context goes to every layer that takes one (``takes_context``: coupling, autoregressive
    and spline layers built with ``context_features``) and to the base when it is conditional
    (e.g. :class:`~flowforge.distributions.ConditionalDiagGaussian`); other layers ignore it.
    ``log q(x | c) = log q0(z₀ | c) − Σₖ log|det ∂fₖ(·; c)/∂z|``. A context is ``(batch, features)``,
    one row per sample, or 1-D for one context shared by all samples. normflows' call forms.
    """

    def __init__(self, q0: BaseDistribution, flows: Iterable[Flow], p: nn.Module | None = None):
        super().__init__(q0, flows, p)
        if not _takes_context(q0) and not any(_takes_context(flow) for flow in self.flows):
            raise ValueError(
                "ConditionalNormalizingFlow needs a conditional base or at least one layer that takes a context "
                "(e.g. built with context_features)"
            )

    def _contexts(self, context, rows: int, like: torch.Tensor) -> tuple[object, torch.Tensor | None]:
        """The context for the base and the context for the layers."""
        context = _as_context(context, rows, like, self)
        return context, context

    def _base_sample(self, num_samples: int, context) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q0(num_samples, context) if _takes_context(self.q0) else self.q0(num_samples)

    def _base_log_prob(self, z: torch.Tensor, context) -> torch.Tensor:
        return self.q0.log_prob(z, context) if _takes_context(self.q0) else self.q0.log_prob(z)

    def _like(self) -> torch.Tensor:
        return next(iter(self.parameters()), torch.empty(0))

    def forward_and_log_det(self, z: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        return push_forward(self.flows, z, self._contexts(context, z.shape[0], z)[1])

    def inverse_and_log_det(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        return pull_back(self.flows, x, self._contexts(context, x.shape[0], x)[1])

    def forward(self, z: torch.Tensor, context=None) -> torch.Tensor:
        return self.forward_and_log_det(z, context)[0]

    def inverse(self, x: torch.Tensor, context=None) -> torch.Tensor:
        return self.inverse_and_log_det(x, context)[0]

    def sample(self, num_samples: int = 1, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``num_samples`` samples at ``context``; returns ``(x, log q(x | c))``."""
        base_context, layer_context = self._contexts(context, num_samples, self._like())
        z, log_q = self._base_sample(num_samples, base_context)
        x, log_det = push_forward(self.flows, z, layer_context)
        return x, log_q - log_det

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """``log q(x | c)``, shape ``(batch,)``."""
        base_context, layer_context = self._contexts(context, x.shape[0], x)
        z, log_det = pull_back(self.flows, x, layer_context)
        return self._base_log_prob(z, base_context) + log_det

    def forward_kld(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """``−mean log q(x | c)`` for pairs ``(x, c)`` from the data."""
        return -self.log_prob(x, context).mean()

    def reverse_kld(
        self, num_samples: int = 1, context=None, beta: float | torch.Tensor = 1.0, score_fn: bool = True
    ) -> torch.Tensor:
        """``mean(log q(x | c) − β log p̃(x | c))`` with ``x ~ q(· | c)``; the target gets the context
        when it takes one. ``score_fn=False``: sticking the landing, as in :meth:`NormalizingFlow.reverse_kld`."""
        target = self._require_target()
        x, log_q = self.sample(num_samples, context)
        if not score_fn:
            with frozen_parameters(self):
                log_q = self.log_prob(x, context)
        log_p = target.log_prob(x, context) if _takes_context(target) else target.log_prob(x)
        return log_q.mean() - beta * log_p.mean()

    def reverse_alpha_div(self, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError("the α-divergence is defined for unconditional flows; use reverse_kld with a context")


class ClassCondFlow(ConditionalNormalizingFlow):
    r"""A flow conditioned on a class label ``y``: ``q(x | y)``.

    The base is class-conditional (:class:`~flowforge.distributions.ClassCondDiagGaussian`, which
    fixes ``num_classes``) and receives the labels; layers that take a context receive the labels
    one-hot. Labels are integer indices ``(batch,)`` (or one-hot rows); an ``int`` label in
    :meth:`sample` gives every sample that class. normflows' call forms: ``sample(num_samples, y)``,
    ``log_prob(x, y)``, ``forward_kld(x, y)``.
    """

    def __init__(self, q0: BaseDistribution, flows: Iterable[Flow], p: nn.Module | None = None):
        if not hasattr(q0, "num_classes") or not _takes_context(q0):
            raise ValueError("ClassCondFlow needs a class-conditional base such as ClassCondDiagGaussian")
        super().__init__(q0, flows, p)

    def _contexts(self, y, rows: int, like: torch.Tensor) -> tuple[object, torch.Tensor | None]:
        if y is None:
            return None, None
        if isinstance(y, int):
            y = torch.full((rows,), y, dtype=torch.long, device=like.device)
        y = class_labels(y.to(like.device), self.q0.num_classes)
        if y.shape[0] != rows:
            raise ValueError(f"ClassCondFlow: {y.shape[0]} labels for {rows} samples; give one label per sample")
        return y, self.q0.one_hot(y, like)

    def _base_sample(self, num_samples: int, y) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q0(num_samples, y)

    def sample(self, num_samples: int = 1, y=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples of class ``y`` (indices, one-hot rows or an int; random classes when None) and
        their ``log q(x | y)``."""
        if y is None:
            y = torch.randint(self.q0.num_classes, (num_samples,), device=self._like().device)
        return super().sample(num_samples, y)


class MultiscaleFlow(nn.Module):
    r"""Multi-scale architecture of RealNVP and Glow (Dinh et al. 2017; Kingma & Dhariwal 2018):
    latents are factored out level by level instead of all being carried to the end.

    Sampling direction, for levels ``i = 0 … L−1``: draw ``zᵢ ~ q0[i]``; for ``i > 0`` join it to the
    running tensor with ``merges[i−1]`` (``[h, zᵢ] -> h``); apply the flows of level ``i``; at the
    end apply ``transform`` (e.g. :class:`flowforge.transforms.Logit` onto ``(0, 1)``). The
    density direction runs this backwards, so ``log q(x) = Σᵢ log q0[i](zᵢ) + Σ log|det|`` with the
    early levels' latents split off after few layers. With ``class_cond`` the bases are
    class-conditional and receive labels ``y``. normflows' argument order and call forms.

    Args:
        q0: one base distribution per level (level 0 is the deepest, smallest one).
        flows: one list of flow layers per level, in the sampling direction.
        merges: ``L − 1`` :class:`~flowforge.flows.Merge` layers.
        transform: optional last layer of the sampling direction.
        class_cond: whether the bases take class labels.
    """

    def __init__(self, q0, flows, merges, transform: Flow | None = None, class_cond: bool = True):
        super().__init__()
        self.q0 = nn.ModuleList(q0)
        self.flows = nn.ModuleList(nn.ModuleList(level) for level in flows)
        self.merges = nn.ModuleList(merges)
        if not len(self.q0) == len(self.flows) == len(self.merges) + 1:
            raise ValueError(
                f"MultiscaleFlow needs one base and one list of flows per level and one merge fewer; got "
                f"{len(self.q0)} bases, {len(self.flows)} flow lists, {len(self.merges)} merges"
            )
        if class_cond and not all(_takes_context(base) for base in self.q0):
            raise ValueError("class_cond=True needs class-conditional bases (ClassCondDiagGaussian)")
        self.transform = transform
        self.class_cond = class_cond

    @property
    def num_levels(self) -> int:
        return len(self.q0)

    def _base_log_prob(self, level: int, z: torch.Tensor, y) -> torch.Tensor:
        return self.q0[level].log_prob(z, y) if self.class_cond else self.q0[level].log_prob(z)

    def _base_sample(self, level: int, num_samples: int, y) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q0[level](num_samples, y) if self.class_cond else self.q0[level](num_samples)

    def forward_and_log_det(self, z: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Map the list of per-level latents to data; returns ``(x, log|det ∂x/∂z|)``."""
        if len(z) != self.num_levels:
            raise ValueError(f"MultiscaleFlow expects {self.num_levels} latents, one per level, got {len(z)}")
        log_det = z[0].new_zeros(z[0].shape[0])
        h = z[0]
        for level in range(self.num_levels):
            if level > 0:
                h, part = self.merges[level - 1]([h, z[level]])
                log_det = log_det + part
            h, part = push_forward(self.flows[level], h)
            log_det = log_det + part
        if self.transform is not None:
            h, part = self.transform(h)
            log_det = log_det + part
        return h, log_det

    def inverse_and_log_det(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Map data to the per-level latents (level 0 first); returns ``(latents, log|det ∂z/∂x|)``."""
        log_det = x.new_zeros(x.shape[0])
        if self.transform is not None:
            x, part = self.transform.inverse(x)
            log_det = log_det + part
        latents = []
        for level in reversed(range(self.num_levels)):
            x, part = pull_back(self.flows[level], x)
            log_det = log_det + part
            if level > 0:
                (x, factored), part = self.merges[level - 1].inverse(x)
                log_det = log_det + part
                latents.append(factored)
        latents.append(x)
        return latents[::-1], log_det

    def forward(self, z: list[torch.Tensor]) -> torch.Tensor:
        """Map per-level latents to data (sampling direction)."""
        return self.forward_and_log_det(z)[0]

    def inverse(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Map data to the per-level latents (density direction)."""
        return self.inverse_and_log_det(x)[0]

    def _labels(self, y, rows: int):
        if not self.class_cond:
            if y is not None:
                raise ValueError("this MultiscaleFlow is not class-conditional (class_cond=False) but got labels")
            return None
        if y is None:
            return None
        if isinstance(y, int):
            y = torch.full((rows,), y, dtype=torch.long)
        device = self.q0[0].loc.device if hasattr(self.q0[0], "loc") else None
        return class_labels(y.to(device), self.q0[0].num_classes)

    def log_prob(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """``log q(x)`` (or ``log q(x | y)``), shape ``(batch,)``."""
        y = self._labels(y, x.shape[0])
        if self.class_cond and y is None:
            raise ValueError("this MultiscaleFlow is class-conditional: log_prob needs the labels y")
        latents, log_det = self.inverse_and_log_det(x)
        for level, z in enumerate(latents):
            log_det = log_det + self._base_log_prob(level, z, y)
        return log_det

    def forward_kld(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """``−mean log q(x | y)``."""
        return -self.log_prob(x, y).mean()

    def sample(self, num_samples: int = 1, y=None, temperature: float | None = None):
        """Draw samples (of classes ``y``: indices, one-hot rows or an int; random when None) and their
        log-density. ``temperature`` ``T`` scales every base's standard deviation by ``T`` (the
        returned log-density is the tempered model's; computed without gradients)."""
        y = self._labels(y, num_samples)
        if self.class_cond and y is None:
            y = torch.randint(self.q0[0].num_classes, (num_samples,), device=self.q0[0].loc.device)
        if temperature is not None:  # tempered samples are for looking at: no gradients
            with torch.no_grad(), _tempered(self.q0, temperature):
                return self.sample(num_samples, y)
        parts = [self._base_sample(level, num_samples, y) for level in range(self.num_levels)]
        x, log_det = self.forward_and_log_det([z for z, _ in parts])
        return x, sum(log_q for _, log_q in parts) - log_det

    def save(self, path: str | os.PathLike) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


@contextmanager
def _tempered(bases: Iterable[nn.Module], temperature: float | None) -> Iterator[None]:
    """Scale the standard deviation of Gaussian bases (``log_scale``) by ``temperature`` for the duration."""
    if temperature is None:
        yield
        return
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    shift = math.log(temperature)
    scaled = [base.log_scale for base in bases if isinstance(getattr(base, "log_scale", None), torch.Tensor)]
    if len(scaled) != len(list(bases)):
        raise ValueError("temperature needs Gaussian bases with a log_scale")
    with torch.no_grad():
        for log_scale in scaled:
            log_scale.add_(shift)
    try:
        yield
    finally:
        with torch.no_grad():
            for log_scale in scaled:
                log_scale.sub_(shift)
