r"""The models: a base distribution pushed through flow layers, with one API for every kind.

``x = f_K ∘ … ∘ f_1(z₀; c)``, ``z₀ ~ q0(· | c)`` and
``log q(x | c) = log q0(z₀ | c) − Σₖ log|det ∂fₖ(·; c)/∂z|``.

:class:`NormalizingFlow` is a single stack of layers; :class:`MultiscaleFlow` factors latents out
level by level (RealNVP, Glow). Both offer the same methods, each with an optional ``context``:

- ``sample(num_samples, context=None, temperature=None) -> (x, log q(x | c))`` (also ``sample_and_log_prob``)
- ``log_prob(x, context=None)``, ``forward_kld(x, context=None)``
- ``forward_and_log_det(z, context=None)``, ``inverse_and_log_det(x, context=None)``, ``forward``, ``inverse``
- ``as_distribution(context=None)``: the model as a :class:`torch.distributions.Distribution`
- ``reverse_kld(num_samples, beta, score_fn, *, context=None)``,
  ``reverse_alpha_div(num_samples, alpha, dreg, *, context=None)`` (see :mod:`flowforge.losses`)

A context is ``(batch, features)``, one row per sample, or 1-D, one context for every row; class
labels are one kind of context: a class-conditional base (:class:`~flowforge.distributions.ClassCondDiagGaussian`)
takes label indices or one-hot rows and hands the layers one-hot rows. The context reaches the base
when it declares ``takes_context`` and the layers that declare it (:attr:`flowforge.flows.Flow.takes_context`).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar, cast

import torch
from torch import nn

from . import losses
from .distributions.base import BaseDistribution, ConditionalBase
from .distributions.flow import FlowDistribution
from .flows.base import Flow, pull_back, push_forward
from .losses import Draw

Context = torch.Tensor | None
# A point of the base space: one tensor, or the list of per-level latents of a MultiscaleFlow.
Latent = TypeVar("Latent", torch.Tensor, list[torch.Tensor])


def _check_base(owner: str, base: object) -> BaseDistribution:
    if not isinstance(base, BaseDistribution):
        raise TypeError(
            f"{owner}: the base q0 must be a flowforge.distributions.BaseDistribution, got {type(base).__name__}"
        )
    return base


def _check_flows(owner: str, flows: Iterable[object]) -> list[Flow]:
    flows = list(flows)
    for index, flow in enumerate(flows):
        if not isinstance(flow, Flow):
            raise TypeError(f"{owner}: layer {index} must be a flowforge.flows.Flow, got {type(flow).__name__}")
    return flows  # type: ignore[return-value]


def _underflow(log_q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log_q`` with −inf for the rows of ``x`` that hold a value beyond the square root of the
    dtype's largest number (1.8e19 in float32, 1.3e154 in float64, and ±inf) and whose log-density
    came out NaN.

    That far out the layers' arithmetic overflows (``inf − inf`` in a conditioner net, ``inf/inf`` in
    a radial layer) although the density there is merely below what the dtype can hold, which is −inf.
    A NaN anywhere else (a NaN input, NaN weights, a layer's bug) stays NaN, so it is still seen.
    """
    if not x.is_floating_point():
        return log_q
    far = (x.abs().flatten(1).amax(1) > math.sqrt(torch.finfo(x.dtype).max)) & ~torch.isnan(x).flatten(1).any(1)
    return torch.where(torch.isnan(log_q) & far, torch.full_like(log_q, -math.inf), log_q)


class _FlowModel(nn.Module, Generic[Latent]):
    """What :class:`NormalizingFlow` and :class:`MultiscaleFlow` share: the losses, sampling with a
    temperature, saving and loading. Subclasses implement the two maps and :meth:`draw`."""

    p: nn.Module | None

    def forward_and_log_det(self, z: Latent, context: Context = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse_and_log_det(self, x: torch.Tensor, context: Context = None) -> tuple[Latent, torch.Tensor]:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, context: Context = None) -> torch.Tensor:
        raise NotImplementedError

    def draw(self, num_samples: int, context: Context = None) -> Draw:
        """Samples with their log-density and what the losses need to know about how they were drawn."""
        raise NotImplementedError

    def _bases(self) -> Sequence[BaseDistribution]:
        raise NotImplementedError

    def forward(self, z: Latent, context: Context = None) -> torch.Tensor:
        """Map base samples to data space (the sampling direction)."""
        return self.forward_and_log_det(z, context)[0]

    def inverse(self, x: torch.Tensor, context: Context = None) -> Latent:
        """Map data to the base space (the density direction)."""
        return self.inverse_and_log_det(x, context)[0]

    def sample(
        self, num_samples: int = 1, context: Context = None, temperature: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``num_samples`` samples (at ``context``); returns ``(x, log q(x | c))``.

        ``temperature`` ``T`` scales the Gaussian bases' standard deviation by ``T`` (Kingma & Dhariwal
        2018); the returned log-density is then the tempered model's, computed without gradients.
        """
        if temperature is not None:  # tempered samples are for looking at: no gradients
            with torch.no_grad(), _tempered(self._bases(), temperature):
                return self.sample(num_samples, context)
        drawn = self.draw(num_samples, context)
        return drawn.x, drawn.log_q

    def sample_and_log_prob(
        self, num_samples: int = 1, context: Context = None, temperature: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same as :meth:`sample`: samples and their log-density in one pass."""
        return self.sample(num_samples, context, temperature)

    def forward_kld(self, x: torch.Tensor, context: Context = None) -> torch.Tensor:
        """Forward KL ``KL(p‖q)`` up to a constant: ``−mean log q(x | c)`` (:func:`flowforge.losses.forward_kl`)."""
        return losses.forward_kl(self, x, context)

    def reverse_kld(
        self, num_samples: int = 1, beta: float | torch.Tensor = 1.0, score_fn: bool = True, *, context: Context = None
    ) -> torch.Tensor:
        """Reverse KL ``KL(q‖p)`` up to ``log Z``, annealed by ``beta``; ``score_fn=False`` for "sticking
        the landing" (:func:`flowforge.losses.reverse_kl`)."""
        return losses.reverse_kl(self, num_samples, beta, score_fn, context=context)

    def reverse_alpha_div(
        self, num_samples: int = 1, alpha: float = 1.0, dreg: bool = False, *, context: Context = None
    ) -> torch.Tensor:
        """The self-normalised α-divergence to the target, optionally with DReG gradients
        (:func:`flowforge.losses.alpha_divergence`)."""
        return losses.alpha_divergence(self, num_samples, alpha, dreg, context=context)

    def as_distribution(self, context: Context = None, event_shape: Sequence[int] | None = None) -> FlowDistribution:
        """This model at ``context`` as a :class:`torch.distributions.Distribution`
        (:class:`~flowforge.distributions.FlowDistribution`: ``sample``, ``rsample``, ``log_prob``,
        ``rsample_and_log_prob``; a ``(B, features)`` context gives ``batch_shape == (B,)``)."""
        return FlowDistribution(self, context, event_shape)

    def save(self, path: str | os.PathLike) -> None:
        """Save the parameters (``state_dict``) to ``path``."""
        torch.save(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        """Load parameters saved by :meth:`save` into this model (same architecture); never unpickles code."""
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def _like(self) -> torch.Tensor:
        """A tensor with the model's dtype and device (for contexts and labels made from scratch)."""
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            return tensor
        return torch.empty(0)

    def _contexts(self, base: BaseDistribution, context: Context, rows: int, like: torch.Tensor, sampling: bool):
        """The context for the base and the one for the layers (both None without a context).

        Without a context, a class-conditional base draws random classes when sampling."""
        if context is None and sampling:
            context = base.default_context(rows, like)
        if context is None:
            return None, None
        if not self.takes_context:
            raise ValueError(
                f"{type(self).__name__}: got a context, but neither its base nor any layer takes one "
                "(build conditional layers with context_features, or a conditional base)"
            )
        return base.prepare_context(context, rows, like)


class NormalizingFlow(_FlowModel[torch.Tensor]):
    """A normalizing flow ``q`` (conditional when its base or layers take a context) with an optional
    target density ``p``.

    Args:
        q0: base distribution; ``q0(n)`` (or ``q0(n, context)`` for a conditional base) returns
            ``(z, log q0(z))``.
        flows: flow layers, applied in order in the sampling (``forward``) direction.
        p: optional target with ``log_prob`` (possibly unnormalised), needed by the reverse-KL and
            α-divergence losses; a :class:`~flowforge.distributions.Target` that declares
            ``takes_context`` receives the context.

    Example:
        >>> import flowforge as nf
        >>> model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), [nf.flows.Planar((2,))])
        >>> x, log_q = model.sample(5)
        >>> x.shape, log_q.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(self, q0: BaseDistribution, flows: Iterable[Flow], p: nn.Module | None = None):
        super().__init__()
        self.q0 = _check_base(type(self).__name__, q0)
        self.flows = nn.ModuleList(_check_flows(type(self).__name__, flows))
        self.p = p

    @property
    def _layers(self) -> Sequence[Flow]:
        return cast("Sequence[Flow]", self.flows)  # the ModuleList holds only Flows (checked above)

    @property
    def takes_context(self) -> bool:
        """Whether the base or any layer takes a context."""
        return self.q0.takes_context or any(flow.takes_context for flow in self._layers)

    def _bases(self) -> Sequence[BaseDistribution]:
        return [self.q0]

    def _base_sample(self, num_samples: int, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        if self.q0.takes_context:
            return cast(ConditionalBase, self.q0)(num_samples, context)
        return self.q0(num_samples)

    def _base_log_prob(self, z: torch.Tensor, context: Context) -> torch.Tensor:
        if self.q0.takes_context:
            return cast(ConditionalBase, self.q0).log_prob(z, context)
        return self.q0.log_prob(z)

    def forward_and_log_det(self, z: torch.Tensor, context: Context = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Map base samples to data space; returns ``(x, log|det ∂x/∂z|)``."""
        return push_forward(self._layers, z, self._contexts(self.q0, context, z.shape[0], z, False)[1])

    def inverse_and_log_det(self, x: torch.Tensor, context: Context = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Map data to the base space; returns ``(z, log|det ∂z/∂x|)``."""
        return pull_back(self._layers, x, self._contexts(self.q0, context, x.shape[0], x, False)[1])

    def log_prob(self, x: torch.Tensor, context: Context = None) -> torch.Tensor:
        """``log q(x)`` (or ``log q(x | c)``) for a batch ``x``, shape ``(batch,)``."""
        base_context, layer_context = self._contexts(self.q0, context, x.shape[0], x, False)
        z, log_det = pull_back(self._layers, x, layer_context)
        return _underflow(self._base_log_prob(z, base_context) + log_det, x)

    def draw(self, num_samples: int = 1, context: Context = None) -> Draw:
        base_context, layer_context = self._contexts(self.q0, context, num_samples, self._like(), True)
        z, log_q0 = self._base_sample(num_samples, base_context)
        x, log_det = push_forward(self._layers, z, layer_context)
        log_selection = None if self.q0.reparameterized else log_q0 - self.q0.proposal_log_prob(z)
        return Draw(x, log_q0 - log_det, log_selection, base_context)


class MultiscaleFlow(_FlowModel[list[torch.Tensor]]):
    r"""Multi-scale architecture of RealNVP and Glow (Dinh et al. 2017; Kingma & Dhariwal 2018):
    latents are factored out level by level instead of all being carried to the end.

    Sampling direction, for levels ``i = 0 … L−1``: draw ``zᵢ ~ q0[i]``; for ``i > 0`` join it to the
    running tensor with ``merges[i−1]`` (``[h, zᵢ] -> h``); apply the flows of level ``i``; at the
    end apply ``transform`` (e.g. :class:`flowforge.flows.Sigmoid` onto ``(0, 1)``). The density
    direction runs this backwards, so ``log q(x) = Σᵢ log q0[i](zᵢ) + Σ log|det|`` with the early
    levels' latents split off after few layers. With ``class_cond`` the bases are class-conditional
    and the context is class labels. ``forward_and_log_det`` takes the list of per-level latents
    and ``inverse_and_log_det`` returns it.

    Args:
        q0: one base distribution per level (level 0 is the deepest, smallest one).
        flows: one list of flow layers per level, in the sampling direction.
        merges: ``L − 1`` :class:`~flowforge.flows.Merge` layers.
        transform: optional last layer of the sampling direction.
        class_cond: whether the bases take class labels.
        p: optional target density (for the reverse-KL losses).
    """

    def __init__(
        self,
        q0: Iterable[BaseDistribution],
        flows: Iterable[Iterable[Flow]],
        merges: Iterable[Flow],
        transform: Flow | None = None,
        class_cond: bool = True,
        p: nn.Module | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        self.q0 = nn.ModuleList(_check_base(name, base) for base in q0)
        self.flows = nn.ModuleList(nn.ModuleList(_check_flows(name, level)) for level in flows)
        self.merges = nn.ModuleList(_check_flows(name, merges))
        if not len(self.q0) == len(self.flows) == len(self.merges) + 1:
            raise ValueError(
                f"MultiscaleFlow needs one base and one list of flows per level and one merge fewer; got "
                f"{len(self.q0)} bases, {len(self.flows)} flow lists, {len(self.merges)} merges"
            )
        if class_cond and not all(base.takes_context for base in self._bases()):
            raise ValueError("class_cond=True needs class-conditional bases (ClassCondDiagGaussian)")
        self.transform = _check_flows(name, [transform])[0] if transform is not None else None
        self.class_cond = class_cond
        self.p = p

    @property
    def num_levels(self) -> int:
        return len(self.q0)

    @property
    def takes_context(self) -> bool:
        return self.class_cond or any(
            flow.takes_context for level in range(self.num_levels) for flow in self._level(level)
        )

    # The ModuleLists hold only what __init__ checked: bases, lists of Flows, and Flows.
    def _bases(self) -> Sequence[BaseDistribution]:
        return cast("Sequence[BaseDistribution]", self.q0)

    def _level(self, level: int) -> Sequence[Flow]:
        return cast("Sequence[Flow]", self.flows[level])

    def _merge(self, level: int) -> Flow:
        return cast(Flow, self.merges[level])

    def _base_log_prob(self, level: int, z: torch.Tensor, context: Context) -> torch.Tensor:
        base = self._bases()[level]
        return cast(ConditionalBase, base).log_prob(z, context) if self.class_cond else base.log_prob(z)

    def _base_sample(self, level: int, num_samples: int, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        base = self._bases()[level]
        return cast(ConditionalBase, base)(num_samples, context) if self.class_cond else base(num_samples)

    def _layer_context(self, context: Context, rows: int, like: torch.Tensor) -> Context:
        return self._contexts(self._bases()[0], context, rows, like, False)[1]

    def forward_and_log_det(
        self, z: Sequence[torch.Tensor], context: Context = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map the list of per-level latents to data; returns ``(x, log|det ∂x/∂z|)``."""
        if len(z) != self.num_levels:
            raise ValueError(f"MultiscaleFlow expects {self.num_levels} latents, one per level, got {len(z)}")
        layer_context = self._layer_context(context, z[0].shape[0], z[0])
        return self._push(z, layer_context)

    def _push(self, z: Sequence[torch.Tensor], layer_context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = z[0].new_zeros(z[0].shape[0])
        h = z[0]
        for level in range(self.num_levels):
            if level > 0:
                h, part = self._merge(level - 1)([h, z[level]])
                log_det = log_det + part
            h, part = push_forward(self._level(level), h, layer_context)
            log_det = log_det + part
        if self.transform is not None:
            h, part = self.transform(h)
            log_det = log_det + part
        return h, log_det

    def inverse_and_log_det(self, x: torch.Tensor, context: Context = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Map data to the per-level latents (level 0 first); returns ``(latents, log|det ∂z/∂x|)``."""
        return self._pull(x, self._layer_context(context, x.shape[0], x))

    def _pull(self, x: torch.Tensor, layer_context: Context) -> tuple[list[torch.Tensor], torch.Tensor]:
        log_det = x.new_zeros(x.shape[0])
        if self.transform is not None:
            x, part = self.transform.inverse(x)
            log_det = log_det + part
        latents = []
        for level in reversed(range(self.num_levels)):
            x, part = pull_back(self._level(level), x, layer_context)
            log_det = log_det + part
            if level > 0:
                (x, factored), part = self._merge(level - 1).inverse(x)
                log_det = log_det + part
                latents.append(factored)
        latents.append(x)
        return latents[::-1], log_det

    def log_prob(self, x: torch.Tensor, context: Context = None) -> torch.Tensor:
        """``log q(x)`` (or ``log q(x | y)`` for class labels ``y``), shape ``(batch,)``."""
        if self.class_cond and context is None:
            raise ValueError("this MultiscaleFlow is class-conditional: log_prob needs the labels as context")
        base_context, layer_context = self._contexts(self._bases()[0], context, x.shape[0], x, False)
        latents, log_det = self._pull(x, layer_context)
        for level, z in enumerate(latents):
            log_det = log_det + self._base_log_prob(level, z, base_context)
        return _underflow(log_det, x)

    def draw(self, num_samples: int = 1, context: Context = None) -> Draw:
        if not all(base.reparameterized for base in self._bases()):
            raise ValueError("MultiscaleFlow samples need reparameterised bases (no ResampledGaussian levels)")
        base_context, layer_context = self._contexts(self._bases()[0], context, num_samples, self._like(), True)
        parts = [self._base_sample(level, num_samples, base_context) for level in range(self.num_levels)]
        x, log_det = self._push([z for z, _ in parts], layer_context)
        return Draw(x, sum(log_q for _, log_q in parts) - log_det, None, base_context)


@contextmanager
def _tempered(bases: Sequence[nn.Module], temperature: float | None) -> Iterator[None]:
    """Scale the standard deviation of Gaussian bases (``log_scale``) by ``temperature`` for the duration."""
    if temperature is None:
        yield
        return
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    shift = math.log(temperature)
    found = (getattr(base, "log_scale", None) for base in bases)
    scaled = [log_scale for log_scale in found if isinstance(log_scale, torch.Tensor)]
    if len(scaled) != len(bases):
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
