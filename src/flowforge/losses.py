r"""The training objectives, as functions of a model and as loss objects for :func:`flowforge.training.fit`.

Every function takes the model first and an optional ``context`` (a conditional model's
``c``; class labels are one kind of context), and returns a scalar to minimise:

- :func:`forward_kl`: ``KL(p‖q)`` up to a constant, ``−mean log q(x | c)`` for data ``x ~ p``
  (maximum likelihood).
- :func:`reverse_kl`: ``KL(q‖p)`` up to ``log Z``, ``mean(log q(x | c) − β log p̃(x | c))`` for
  ``x ~ q``, with annealing ``β`` (Rezende & Mohamed 2015) and the "sticking the landing"
  gradient (Roeder et al. 2017).
- :func:`alpha_divergence`: the self-normalised α-divergence, optionally with the
  doubly-reparameterised gradient (DReG, Tucker et al. 2019).
- :func:`elbo_loss`: the negative ELBO of a VAE with a flow posterior, with warm-up weight ``β``.

The model side is duck-typed: a flow model offers ``log_prob(x, context)``, ``draw(num_samples,
context)`` (see :class:`Draw`) and a target ``p``; a VAE offers ``terms(x)``. The loss objects
(:class:`ForwardKL`, :class:`ReverseKL`, :class:`AlphaDivergence`, :class:`ELBO`) hold a loss's
settings so that one training loop can run any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple, Protocol, cast

import torch
from torch import nn

from .distributions.targets import Target
from .importance import log_mean_exp
from .utils.protocols import LogDensity


class Draw(NamedTuple):
    """Samples of a flow model with what the losses need to know about how they were drawn.

    ``log_selection`` is ``None`` when the sample is a reparameterised function of the model's
    parameters (a Gaussian base); a base sampled by accept/reject (:class:`~flowforge.distributions.ResampledGaussian`)
    gives the log of its selection factor ``log q0(z) − log π(z)``, whose score the gradient needs.
    """

    x: torch.Tensor
    log_q: torch.Tensor
    log_selection: torch.Tensor | None
    context: torch.Tensor | None


class DensityModel(Protocol):
    """What the losses use of a model (implemented by :class:`flowforge.NormalizingFlow`)."""

    p: nn.Module | None

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor: ...

    def draw(self, num_samples: int, context: torch.Tensor | None = None) -> Draw: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


class ELBOModel(Protocol):
    """What :func:`elbo_loss` uses of a VAE (implemented by :class:`flowforge.FlowVAE`): ``terms(x)``
    returns ``log p(x | z)``, ``log p(z)`` and ``log q(z | x)`` per row for one posterior sample."""

    def terms(self, x: torch.Tensor, num_samples: int = 1) -> ELBOTerms: ...


class ELBOTerms(Protocol):
    """Per-row terms of one posterior sample (read-only, e.g. :class:`flowforge.vae.ELBOTerms`)."""

    @property
    def log_likelihood(self) -> torch.Tensor: ...

    @property
    def log_prior(self) -> torch.Tensor: ...

    @property
    def log_posterior(self) -> torch.Tensor: ...


class ConditionalTarget(Protocol):
    """A :class:`~flowforge.distributions.Target` with ``takes_context = True``: ``log p̃(x | c)``."""

    def log_prob(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor: ...


def require_target(model: DensityModel) -> nn.Module:
    """The model's target density ``p``; ValueError when it has none."""
    if model.p is None:
        raise ValueError("this loss needs a target density: build NormalizingFlow(q0, flows, p=target)")
    return model.p


def target_log_prob(target: nn.Module, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``log p̃(x)``, or ``log p̃(x | c)`` for a :class:`~flowforge.distributions.Target` that declares
    ``takes_context``."""
    if context is not None and isinstance(target, Target) and target.takes_context:
        return cast(ConditionalTarget, target).log_prob(x, context)
    return cast(LogDensity, target).log_prob(x)


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


def path_log_prob(model: DensityModel, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``log q(x | c)`` with the parameters held fixed but the dependence on ``x`` kept: the path
    derivative used by "sticking the landing" and DReG."""
    with frozen_parameters(model):  # type: ignore[arg-type]
        return model.log_prob(x, context)


def forward_kl(model: DensityModel, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """Forward KL ``KL(p‖q)`` up to a constant: ``−mean log q(x | c)`` for samples ``x ~ p``."""
    return -model.log_prob(x, context).mean()


def reverse_kl(
    model: DensityModel,
    num_samples: int = 1,
    beta: float | torch.Tensor = 1.0,
    score_fn: bool = True,
    *,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reverse KL ``KL(q‖p)`` up to ``log Z``: ``mean(log q(x | c) − β log p̃(x | c))``, ``x ~ q(· | c)``.

    ``beta`` anneals the target (Rezende & Mohamed 2015). ``score_fn=False`` uses the "sticking the
    landing" estimator (Roeder et al. 2017, https://arxiv.org/abs/1703.09194): ``log q`` is evaluated
    with the parameters held fixed, which drops the zero-mean score term from the gradient.

    A base sampled by accept/reject (``ResampledGaussian``) carries the proposal's parameters by
    reparameterisation but not the acceptance's, so the gradient gets the score term
    ``E[(f − b) ∇ log s(z)]`` of the selection factor ``s = q0/π`` with a leave-one-out baseline ``b``,
    added with value 0. This holds with and without a context.
    """
    target = require_target(model)
    draw = model.draw(num_samples, context)
    log_q = draw.log_q if score_fn else path_log_prob(model, draw.x, draw.context)
    log_p = target_log_prob(target, draw.x, draw.context)
    loss = log_q.mean() - beta * log_p.mean()
    if draw.log_selection is None:
        return loss
    reward = (log_q - beta * log_p).detach()
    baseline = (reward.sum() - reward) / max(reward.shape[0] - 1, 1)
    term = ((reward - baseline) * draw.log_selection).mean()
    return loss + (term - term.detach())


def alpha_divergence_estimate(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    """The self-normalised α-divergence estimate from log importance weights ``log p̃ − log q``."""
    if alpha == 1.0:
        return (torch.softmax(log_w, 0) * log_w).sum() - log_mean_exp(log_w)
    if alpha == 0.0:
        return log_mean_exp(log_w) - log_w.mean()
    return (log_mean_exp(alpha * log_w) - alpha * log_mean_exp(log_w)) / (alpha * (alpha - 1.0))


def dreg_weights(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
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


def alpha_divergence(
    model: DensityModel,
    num_samples: int = 1,
    alpha: float = 1.0,
    dreg: bool = False,
    *,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""α-divergence between the target and the flow, estimated with ``x ~ q(· | c)``.

    ``D_α = 1/(α(α−1)) log E_q[(p/q)^α]`` with ``p`` self-normalised by the same samples, i.e.
    ``1/(α(α−1)) (log mean wᵅ − α log mean w)`` with ``w = p̃/q`` (Li & Turner 2016). It is Rényi's
    divergence ``D_α(p‖q)`` divided by ``α``; its limits are ``KL(p‖q)`` at ``α = 1`` (the default,
    mass-covering) and ``KL(q‖p)`` at ``α = 0`` (mode-seeking), both handled exactly. Invariant to
    the scale of ``p̃``.

    ``dreg=True`` returns the same value with the doubly-reparameterised gradient (Tucker et al.
    2019, https://arxiv.org/abs/1810.04152): the score terms are replaced by path derivatives,
    which lowers the gradient's variance. Needs a reparameterised base (not ``ResampledGaussian``).
    """
    target = require_target(model)
    draw = model.draw(num_samples, context)
    if draw.log_selection is not None:
        raise ValueError(
            "the α-divergence needs a reparameterised base; a ResampledGaussian base is trained with reverse_kl"
        )
    log_w = target_log_prob(target, draw.x, draw.context) - draw.log_q
    value = alpha_divergence_estimate(log_w, alpha)
    if not dreg:
        return value
    log_w_path = target_log_prob(target, draw.x, draw.context) - path_log_prob(model, draw.x, draw.context)
    surrogate = (dreg_weights(log_w.detach(), alpha) * log_w_path).sum()
    return value.detach() + surrogate - surrogate.detach()


def elbo_loss(model: ELBOModel, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The negative ELBO of a VAE with a flow posterior, one posterior sample per row, with the KL
    term weighted by ``β`` (deterministic warm-up, Sønderby et al. 2016, https://arxiv.org/abs/1602.02282):
    ``−mean(log p(x | z) − β (log q(z | x) − log p(z)))``."""
    terms = model.terms(x)
    return -(terms.log_likelihood - beta * (terms.log_posterior - terms.log_prior)).mean()


class ForwardKL:
    """Maximum likelihood on data: ``loss(model, batch, context=None)`` is :func:`forward_kl`."""

    name = "forward_kl"
    needs_data = True

    def __call__(self, model: DensityModel, batch: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return forward_kl(model, batch, context)


class ReverseKL:
    """Reverse KL to the model's target with ``num_samples`` samples a step, annealed by
    ``β = min(1, β₀ + it/anneal_iters)`` when ``anneal_iters`` is set; ``score_fn=False`` for the
    "sticking the landing" gradient. ``loss(model, beta, context=None)`` is :func:`reverse_kl`."""

    name = "reverse_kl"
    needs_data = False

    def __init__(
        self, num_samples: int = 40, anneal_iters: int | None = None, beta0: float = 0.01, score_fn: bool = True
    ):
        self.num_samples, self.anneal_iters, self.beta0, self.score_fn = num_samples, anneal_iters, beta0, score_fn

    def beta(self, iteration: int) -> float:
        """``β`` at ``iteration`` (0-based): ``min(1, β₀ + it/anneal_iters)``, or 1 without annealing."""
        return annealing_beta(iteration, self.anneal_iters, self.beta0)

    def __call__(
        self, model: DensityModel, beta: float | torch.Tensor = 1.0, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        return reverse_kl(model, self.num_samples, beta, self.score_fn, context=context)


class AlphaDivergence:
    """:func:`alpha_divergence` with ``num_samples`` samples a step; ``loss(model, beta, context=None)``
    ignores ``beta`` (the α-divergence is not annealed)."""

    name = "alpha_divergence"
    needs_data = False
    score_fn = True

    def __init__(self, num_samples: int = 40, alpha: float = 1.0, dreg: bool = False):
        self.num_samples, self.alpha, self.dreg = num_samples, alpha, dreg
        self.anneal_iters = None

    def beta(self, iteration: int) -> float:
        return 1.0

    def __call__(
        self, model: DensityModel, beta: float | torch.Tensor = 1.0, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        return alpha_divergence(model, self.num_samples, self.alpha, self.dreg, context=context)


class ELBO:
    """The negative ELBO of a :class:`~flowforge.FlowVAE` with a linear KL warm-up over
    ``warmup_steps`` optimisation steps: ``loss(model, batch, step)`` is :func:`elbo_loss`."""

    name = "elbo"
    needs_data = True

    def __init__(self, warmup_steps: int = 0):
        self.warmup_steps = warmup_steps

    def beta(self, step: int) -> float:
        """The KL weight after ``step`` steps (1-based): ``min(1, step / warmup_steps)``."""
        return min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0

    def __call__(self, model: ELBOModel, batch: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        return elbo_loss(model, batch, beta)


def annealing_beta(iteration: int, anneal_iters: int | None, beta0: float = 0.01) -> float:
    """``β = min(1, β₀ + it / anneal_iters)``; 1 when annealing is off (``anneal_iters`` falsy)."""
    if not anneal_iters:
        return 1.0
    return min(1.0, beta0 + iteration / anneal_iters)


LOSSES = {"forward_kl": ForwardKL, "reverse_kl": ReverseKL, "alpha_divergence": AlphaDivergence, "elbo": ELBO}
"""The loss names :func:`flowforge.training.fit` accepts, and their classes."""
