r"""flowforge's flows as density estimators for sbi (https://github.com/sbi-dev/sbi), the toolkit for
simulation-based inference.

:func:`posterior_nn` returns a builder that sbi's neural posterior estimation takes in place of a
model name, and :func:`likelihood_nn` one for neural likelihood estimation::

    from sbi.inference import NPE
    from flowforge.sbi import posterior_nn

    inference = NPE(prior, density_estimator=posterior_nn("nsf", embedding_net=my_net))
    estimator = inference.append_simulations(theta, x).train()
    posterior = inference.build_posterior(estimator)
    samples = posterior.sample((1000,), x=x_observed)

sbi calls the builder once with the first round's training parameters ``θ`` and simulations ``x`` (the
validation rows left out; they set the z-scoring statistics) and trains the
:class:`FlowEstimator` it returns with its own loop (``estimator.loss``). The estimator is sbi's
``ConditionalDensityEstimator``: ``log_prob(input, condition)`` takes inputs ``(sample, batch, *event)`` or
``(batch, *event)`` and conditions ``(batch, *condition)`` or ``(sample, batch, *condition)``, and returns
``(sample, batch)``; ``sample(sample_shape, condition)`` returns ``(*sample_shape, batch, *event)``.

The condition passes through sbi-style z-scoring and then the embedding net; its flattened output is the
flow's context. The input is modelled in standardised units (``z_score_theta``): a fixed
:class:`~flowforge.flows.Standardization` (or, with ``"transform_to_unconstrained"``, the bijection of the
prior's support onto the real numbers) is the flow's last layer, so samples and densities are in the
input's own units.

This module imports sbi, an optional extra: ``pip install 'flowforge[sbi]'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.distributions import Distribution, constraints
from torch.nn import functional as F

from .distributions.base import DiagGaussian
from .flows.affine import Standardization
from .flows.base import EventFlow, Flow
from .model import NormalizingFlow
from .presets import MAF, NSF

try:
    from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("flowforge.sbi needs the sbi package (0.23 or newer): pip install 'flowforge[sbi]'") from error

__all__ = ["FLOWS", "ZSCORES", "FlowEstimator", "Unconstrain", "likelihood_nn", "posterior_nn"]

#: The flows :func:`posterior_nn` builds, by name.
FLOWS = ("maf", "nsf", "nsf-ar")
#: sbi's z-scoring options: per dimension, one mean and scale for all dimensions (time series, images),
#: none, or (inputs only) the prior's support mapped onto the real numbers.
ZSCORES = ("independent", "structured", "none", "transform_to_unconstrained")
ZScore = Literal["independent", "structured", "none", "transform_to_unconstrained"]
PlainZScore = Literal["independent", "structured", "none"]
Builder = Callable[[torch.Tensor, torch.Tensor], "FlowEstimator"]


class FlowEstimator(ConditionalDensityEstimator):
    r"""A flowforge :class:`~flowforge.NormalizingFlow` ``q(θ | c)`` as sbi's conditional density estimator,
    with the context ``c = embedding_net(condition)`` flattened to ``(rows, features)``.

    Args:
        model: a conditional flow over inputs of shape ``(rows, input_shape[0])``.
        input_shape: the event shape of an input (sbi's ``θ`` for a posterior), one dimension.
        condition_shape: the event shape of a condition (sbi's ``x``).
        embedding_net: maps conditions ``(rows, *condition_shape)`` to ``(rows, …)``; trained with the flow.
    """

    def __init__(
        self,
        model: NormalizingFlow,
        input_shape: torch.Size,
        condition_shape: torch.Size,
        embedding_net: nn.Module,
    ) -> None:
        super().__init__(net=model, input_shape=input_shape, condition_shape=condition_shape)
        if len(self.input_shape) != 1:
            raise ValueError(f"FlowEstimator models inputs of one dimension, got input_shape {tuple(input_shape)}")
        self._embedding_net = embedding_net

    @property
    def model(self) -> NormalizingFlow:
        """The flowforge flow ``q(input | context)`` (sbi's ``net``)."""
        return self.net

    @property
    def embedding_net(self) -> nn.Module:
        return self._embedding_net

    def context(self, condition: torch.Tensor) -> torch.Tensor:
        """The flow's context for conditions ``(*rows, *condition_shape)``: ``(prod(rows), features)``."""
        self._check_condition_shape(condition)
        rows = condition.shape[: condition.dim() - len(self.condition_shape)]
        flat = condition.reshape(math.prod(rows), *self.condition_shape)
        return self._embedding_net(flat).reshape(flat.shape[0], -1)

    def log_prob(self, input: torch.Tensor, condition: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""``log q(input | condition)`` of shape ``(sample, batch)``; the batch sizes of input and condition
        must be equal or one of them 1 (sbi's broadcasting rule)."""
        self._check_input_shape(input)
        self._check_condition_shape(condition)
        events = len(self.condition_shape)
        if input.dim() == 2:
            input = input.unsqueeze(0)
        if input.dim() != 3:
            raise ValueError(
                f"input must be (batch, {self.input_shape[0]}) or (sample, batch, …), got {tuple(input.shape)}"
            )
        samples = input.shape[0]
        per_sample = condition.dim() == events + 2  # the condition has a sample dimension of its own
        if condition.dim() not in (events + 1, events + 2):
            raise ValueError(
                f"condition must be (batch, *{tuple(self.condition_shape)}) or (sample, batch, …), got "
                f"{tuple(condition.shape)}"
            )
        condition_batch = condition.shape[1] if per_sample else condition.shape[0]
        try:
            batch = torch.broadcast_shapes((input.shape[1],), (condition_batch,))[0]
        except RuntimeError as error:
            raise ValueError(
                f"input and condition must have the same batch size or one of them 1, got {input.shape[1]} and "
                f"{condition_batch}"
            ) from error
        input = input.expand(samples, batch, -1)
        if per_sample:
            condition = condition.expand(samples, batch, *self.condition_shape)
            context = self.context(condition).reshape(samples, batch, -1)
        else:  # embed each condition once, then repeat it for every sample
            context = self.context(condition).expand(batch, -1).unsqueeze(0).expand(samples, -1, -1)
        rows = samples * batch
        log_q = self.model.log_prob(input.reshape(rows, -1), context.reshape(rows, -1))
        return log_q.reshape(samples, batch)

    def loss(self, input: torch.Tensor, condition: torch.Tensor, **kwargs) -> torch.Tensor:
        """``−log q(input | condition)`` per row, for ``input`` ``(batch, *event)`` and ``condition``
        ``(batch, *condition)``: what sbi's training loop minimises."""
        return -self.log_prob(input.unsqueeze(0), condition)[0]

    def sample_and_log_prob(
        self, sample_shape: torch.Size, condition: torch.Tensor, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``(*sample_shape, batch, *event)`` for conditions ``(batch, *condition)`` and their
        log-density ``(*sample_shape, batch)``, in one pass of the flow."""
        self._check_condition_shape(condition)
        if condition.dim() != len(self.condition_shape) + 1:
            raise ValueError(f"condition must be (batch, *{tuple(self.condition_shape)}), got {tuple(condition.shape)}")
        sample_shape = torch.Size(sample_shape)
        count, batch = sample_shape.numel(), condition.shape[0]
        context = self.context(condition).repeat(count, 1)  # sample index major: row s·batch + b
        x, log_q = self.model.sample(count * batch, context)
        return x.reshape(*sample_shape, batch, *self.input_shape), log_q.reshape(*sample_shape, batch)

    def sample(self, sample_shape: torch.Size, condition: torch.Tensor, **kwargs) -> torch.Tensor:
        """Samples ``(*sample_shape, batch, *event)`` for conditions ``(batch, *condition)``."""
        return self.sample_and_log_prob(sample_shape, condition)[0]


class _Standardize(nn.Module):
    """``(c − mean) / std`` with fixed statistics (buffers, saved with the estimator)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return (c - self.mean) / self.std


class Unconstrain(EventFlow):
    r"""An interval or a half-line as the last layer of a flow, so that the flow's values on the real line
    land inside a prior's support: ``x = a + (b − a) σ(y)`` on ``(a, b)`` with
    ``log|det ∂x/∂y| = Σ log(b − a) + log σ(y) + log σ(−y)``, or ``x = a + exp(y)`` on ``(a, ∞)`` with
    ``Σ y``. Both directions cheap and exact (the logit ``y = log(x − a) − log(b − x)``). The bounds are
    buffers, so they follow the model to its device and are saved with it. Used by ``z_score_theta=
    "transform_to_unconstrained"``; a coordinate's upper bound of ``inf`` makes it a half-line."""

    lower: torch.Tensor
    upper: torch.Tensor

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        if lower.dim() != 1 or lower.shape != upper.shape:
            raise ValueError(
                f"lower and upper must be vectors of one shape, got {tuple(lower.shape)}, {tuple(upper.shape)}"
            )
        if not (torch.isfinite(lower).all() and (upper > lower).all()):
            raise ValueError("Unconstrain needs finite lower bounds below the upper bounds")
        super().__init__(lower.shape[0])
        self.register_buffer("lower", lower)
        self.register_buffer("upper", upper)

    # Values are kept strictly inside the support, as torch's SigmoidTransform clamps: a prior draw on a
    # bound (torch.rand can return 0) has a finite density, and a saturated sigmoid gives no bound.

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(z)
        bounded = torch.isfinite(self.upper)
        width = torch.where(bounded, self.upper - self.lower, 1.0)
        info = torch.finfo(z.dtype)
        fraction = torch.sigmoid(z).clamp(info.tiny, 1 - info.eps)
        x = torch.where(bounded, self.lower + width * fraction, self.lower + torch.exp(torch.where(bounded, 0, z)))
        log_det = torch.where(bounded, torch.log(width) + F.logsigmoid(z) + F.logsigmoid(-z), z)
        return x, log_det.sum(1)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        bounded = torch.isfinite(self.upper)
        width = torch.where(bounded, self.upper - self.lower, 1.0)
        info = torch.finfo(x.dtype)
        fraction = ((x - self.lower) / width).clamp(info.tiny, 1 - info.eps)
        above = (x - self.lower).clamp_min(info.tiny)
        z = torch.where(bounded, torch.log(fraction) - torch.log1p(-fraction), torch.log(above))
        log_det = torch.where(bounded, torch.log(width) + F.logsigmoid(z) + F.logsigmoid(-z), z)
        return z, -log_det.sum(1)


def _statistics(data: torch.Tensor, how: str, what: str, min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``data`` ``(rows, *event)`` as sbi computes them: per dimension
    (``"independent"``) or one for all (``"structured"``: the mean over rows of the spread along the first
    event dimension); rows with a NaN or inf are left out."""
    rows = data.reshape(data.shape[0], -1)
    valid = data[torch.isfinite(rows).all(1)]
    if valid.shape[0] < 2:
        raise ValueError(f"z-scoring {what} needs at least 2 rows without NaN or inf, got {valid.shape[0]}")
    if how == "structured":
        mean = valid.mean()
        std = valid.std(1).clamp_min(min_std).mean()
        mean, std = mean.expand(data.shape[1:]).clone(), std.expand(data.shape[1:]).clone()
    else:
        mean, std = valid.mean(0), valid.std(0).clamp_min(min_std)
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        raise ValueError(f"z-scoring {what} ({how!r}) gives a non-finite mean or scale; use another z_score option")
    return mean, std


def _check_zscore(value: str, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")


def _last_layer(how: str, batch: torch.Tensor, prior: Distribution | None) -> Flow | None:
    """The fixed last layer that takes the flow from standardised to the input's own units."""
    if how == "none":
        return None
    if how != "transform_to_unconstrained":
        mean, std = _statistics(batch, how, "the inputs", 1e-14)
        return Standardization(mean, std)
    if prior is None:
        raise ValueError("z_score_theta='transform_to_unconstrained' needs the prior: posterior_nn(..., prior=prior)")
    support = prior.support
    base = support.base_constraint if isinstance(support, constraints.independent) else support
    if isinstance(base, constraints._Real):  # unbounded: standardise by the prior's own moments
        return Standardization(prior.mean.to(batch), prior.stddev.to(batch))
    dim = batch.shape[1]
    if isinstance(base, constraints._Interval):
        lower, upper = base.lower_bound, base.upper_bound
    elif isinstance(base, constraints._GreaterThan):
        lower, upper = base.lower_bound, torch.tensor(math.inf)
    else:
        raise ValueError(
            f"z_score_theta='transform_to_unconstrained' handles intervals and half-lines (a, inf); the prior's "
            f"support is {support}: use 'independent'"
        )
    as_vector = [torch.as_tensor(b, dtype=batch.dtype, device=batch.device).expand(dim).clone() for b in (lower, upper)]
    return Unconstrain(*as_vector)


def _builder(
    flow: str,
    *,
    z_score_input: str,
    z_score_condition: str,
    hidden_features: int,
    num_transforms: int,
    num_bins: int,
    tail_bound: float,
    embedding_net: nn.Module | None,
    prior: Distribution | None,
    swap: bool,
) -> Builder:
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {', '.join(FLOWS)}, got {flow!r}")
    _check_zscore(z_score_input, "z_score_theta" if not swap else "z_score_x", ZSCORES[:3] if swap else ZSCORES)
    _check_zscore(z_score_condition, "z_score_x" if not swap else "z_score_theta", ZSCORES[:3])
    for name, value in (("hidden_features", hidden_features), ("num_transforms", num_transforms)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if flow != "maf" and num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")

    def build(batch_theta: torch.Tensor, batch_x: torch.Tensor) -> FlowEstimator:
        inputs, conditions = (batch_x, batch_theta) if swap else (batch_theta, batch_x)
        if inputs.dim() != 2 or inputs.shape[1] < 2:
            raise ValueError(
                f"flowforge's {flow} models inputs of shape (rows, features) with at least 2 features, got "
                f"{tuple(inputs.shape)}"
            )
        embedding = embedding_net if embedding_net is not None else nn.Identity()
        if z_score_condition != "none":
            mean, std = _statistics(conditions, z_score_condition, "the conditions", 1e-7)
            embedding = nn.Sequential(_Standardize(mean, std), embedding)
        embedding = embedding.to(conditions.device)
        training = embedding.training
        with torch.no_grad():  # the context's width, probed in evaluation mode (BatchNorm keeps its statistics)
            features = embedding.eval()(conditions[:2]).reshape(min(2, conditions.shape[0]), -1).shape[1]
        embedding.train(training)
        dim = inputs.shape[1]
        q0 = DiagGaussian(dim, trainable=False)
        if flow == "maf":
            model = MAF(dim, num_transforms, hidden=hidden_features, q0=q0, context_features=features)
        else:
            # "nsf" as sbi's own NSF: the context gates the conditioners' residual blocks and the bin logits are
            # scaled by 1/√hidden; on the benchmark's tasks this lowered C2ST by about 0.02 (docs/sbi.md).
            coupling = flow == "nsf"
            model = NSF(
                dim,
                num_transforms,
                hidden=hidden_features,
                bins=num_bins,
                tail_bound=tail_bound,
                autoregressive=not coupling,
                q0=q0,
                context_features=features,
                gate_context=coupling,
                bin_logit_scale=1 / math.sqrt(hidden_features) if coupling else 1.0,
            )
        last = _last_layer(z_score_input, inputs, prior)
        if last is not None:
            model = NormalizingFlow(model.q0, [*model.flows, last])
        model = model.to(inputs.device)
        return FlowEstimator(model, inputs.shape[1:], conditions.shape[1:], embedding)

    return build


def posterior_nn(
    flow: str = "nsf",
    *,
    z_score_theta: ZScore = "independent",
    z_score_x: PlainZScore = "independent",
    hidden_features: int = 50,
    num_transforms: int = 5,
    num_bins: int = 10,
    tail_bound: float = 5.0,
    embedding_net: nn.Module | None = None,
    prior: Distribution | None = None,
) -> Builder:
    r"""A builder of posterior estimators ``q(θ | x)`` for sbi's ``NPE(prior, density_estimator=...)``.

    Args:
        flow: ``"maf"`` (:func:`~flowforge.presets.MAF`), ``"nsf"`` (coupling
            :func:`~flowforge.presets.NSF`) or ``"nsf-ar"`` (autoregressive splines).
        z_score_theta: how ``θ`` is standardised before the flow models it: ``"independent"`` (per
            parameter, from the first round's training simulations), ``"structured"`` (one mean and
            scale), ``"none"``, or
            ``"transform_to_unconstrained"`` (the prior's bounded support mapped onto the real numbers,
            or its mean and standard deviation when unbounded; needs ``prior``).
        z_score_x: how simulations are standardised before the embedding net (``"independent"``,
            ``"structured"`` or ``"none"``).
        hidden_features, num_transforms, num_bins: the conditioners' width, the number of layers, and
            the splines' bins (sbi's defaults).
        tail_bound: the splines act on ``[−tail_bound, tail_bound]``, the identity outside.
        embedding_net: a network applied to (standardised) simulations, trained with the flow.
        prior: the prior, for ``z_score_theta="transform_to_unconstrained"``.

    Example::

        inference = NPE(prior, density_estimator=posterior_nn("maf", num_transforms=5))
    """
    return _builder(
        flow,
        z_score_input=z_score_theta,
        z_score_condition=z_score_x,
        hidden_features=hidden_features,
        num_transforms=num_transforms,
        num_bins=num_bins,
        tail_bound=tail_bound,
        embedding_net=embedding_net,
        prior=prior,
        swap=False,
    )


def likelihood_nn(
    flow: str = "nsf",
    *,
    z_score_theta: PlainZScore = "independent",
    z_score_x: PlainZScore = "independent",
    hidden_features: int = 50,
    num_transforms: int = 5,
    num_bins: int = 10,
    tail_bound: float = 5.0,
    embedding_net: nn.Module | None = None,
) -> Builder:
    r"""A builder of likelihood estimators ``q(x | θ)`` for sbi's ``NLE(prior, density_estimator=...)``:
    as :func:`posterior_nn` with the roles swapped (``x`` is modelled, ``θ`` is the condition, and
    ``embedding_net`` applies to ``θ``)."""
    return _builder(
        flow,
        z_score_input=z_score_x,
        z_score_condition=z_score_theta,
        hidden_features=hidden_features,
        num_transforms=num_transforms,
        num_bins=num_bins,
        tail_bound=tail_bound,
        embedding_net=embedding_net,
        prior=None,
        swap=True,
    )
