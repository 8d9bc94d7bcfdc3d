"""A flow model seen as a :class:`torch.distributions.Distribution` (``model.as_distribution()``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch.distributions import Distribution, constraints

from .base import BaseDistribution


class FlowModel(Protocol):
    """What :class:`FlowDistribution` uses of a model (:class:`flowforge.NormalizingFlow`,
    :class:`flowforge.MultiscaleFlow`; the models import this module, not the other way round)."""

    def sample(self, num_samples: int, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor: ...

    def _bases(self) -> Sequence[BaseDistribution]: ...

    def _like(self) -> torch.Tensor: ...


class FlowDistribution(Distribution):
    r"""A flowforge model at a fixed context as a :class:`torch.distributions.Distribution`, so code
    written for torch distributions (a Pyro guide or prior through ``pyro.contrib.zuko.ZukoToPyro``,
    a ``kl_divergence`` by sampling, sbi-style estimators) can use it. Made by
    :meth:`flowforge.NormalizingFlow.as_distribution`; it holds the model, not a copy, so it follows
    the model's training.

    Shapes follow torch's conventions: ``sample(sample_shape)`` has shape
    ``sample_shape + batch_shape + event_shape`` and ``log_prob(x)`` returns ``x``'s shape less the
    event dimensions. Without a context, or with one 1-D context ``(features,)`` (or one class label)
    for every sample, ``batch_shape`` is ``()``; with a ``(B, features)`` context (or ``B`` labels),
    ``batch_shape`` is ``(B,)``: one conditional distribution per row. A model on a class-conditional
    base needs its labels (without them it would sample random classes, a mixture whose density it
    does not compute). :meth:`expand` adds leading batch dimensions (Pyro's plates use it). The
    ``support`` is the real space of the event shape: layers do not declare the support they map
    onto, so a flow ending in a sigmoid still reports it.

    ``rsample`` keeps gradients with respect to the model's parameters (the reparameterisation
    trick), when every base of the model is reparameterised; ``rsample_and_log_prob`` returns the
    samples with their log-density from the same pass, as zuko's flows do (Pyro's ``ZukoToPyro``
    uses it, so a guide costs one pass a step).

    Args:
        model: a :class:`~flowforge.NormalizingFlow` or :class:`~flowforge.MultiscaleFlow`.
        context: None, ``(features,)``, ``(B, features)``, or class labels ``()`` / ``(B,)``.
        event_shape: the shape of one sample; by default the base's shape for a
            :class:`~flowforge.NormalizingFlow` (give it when the layers reshape, and for a
            :class:`~flowforge.MultiscaleFlow`). Checked against the first samples drawn.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(
        self,
        model: FlowModel,
        context: torch.Tensor | None = None,
        event_shape: Sequence[int] | None = None,
        validate_args: bool | None = None,
        *,
        batch_shape: Sequence[int] | None = None,
    ) -> None:
        self.model, self.context = model, context
        labelled = any(type(base).default_context is not BaseDistribution.default_context for base in model._bases())
        if context is None and labelled:
            raise ValueError(
                "as_distribution: this model's base is class-conditional: give the class labels as the context "
                "(without them it samples random classes, and its density needs the labels)"
            )
        self._labels = labelled and context is not None and not context.is_floating_point()
        if context is None or context.dim() == (0 if self._labels else 1):
            context_batch: tuple[int, ...] = ()
        elif context.dim() == (1 if self._labels else 2):
            context_batch = (context.shape[0],)
        else:
            expected = (
                "class labels () or (batch,), or one-hot rows" if labelled else "(features,) or (batch, features)"
            )
            raise ValueError(f"as_distribution: context must be {expected}, got shape {tuple(context.shape)}")
        self._context_batch = torch.Size(context_batch)
        full = self._context_batch if batch_shape is None else torch.Size(batch_shape)
        if full[len(full) - len(self._context_batch) :] != self._context_batch:
            raise ValueError(
                f"FlowDistribution: batch_shape {tuple(full)} must end with the context's batch "
                f"{tuple(self._context_batch)}"
            )
        if event_shape is None:
            base_shape = getattr(getattr(model, "q0", None), "shape", None)
            if base_shape is None:
                raise ValueError(
                    f"as_distribution: give event_shape for a {type(model).__name__} (the shape of one sample)"
                )
            event_shape = base_shape
        super().__init__(full, torch.Size(event_shape), validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return all(base.reparameterized for base in self.model._bases())

    def _contexts(self, copies: int) -> torch.Tensor | None:
        """The context for ``copies`` samples of every batch member, sample index major."""
        context = self.context
        if context is None or (not self._labels and context.dim() == 1):
            return context
        if self._labels and context.dim() == 0:
            return context.reshape(1).repeat(copies)
        return context.repeat(copies) if self._labels else context.repeat(copies, 1)

    def _copies(self, shape: torch.Size) -> int:
        """How many times each context row is used for values of leading ``shape`` (sample and batch)."""
        return math.prod(shape[: len(shape) - len(self._context_batch)])

    def rsample_and_log_prob(self, sample_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples of shape ``sample_shape + batch_shape + event_shape`` and their log-densities, in one
        pass, differentiable with respect to the model's parameters."""
        shape = torch.Size(sample_shape) + self.batch_shape
        copies = self._copies(shape)
        rows = copies * math.prod(self._context_batch)
        if rows == 0:
            like = self.model._like()
            return like.new_empty(shape + self.event_shape), like.new_empty(shape)
        x, log_q = self.model.sample(rows, self._contexts(copies))
        if x.shape[1:] != self.event_shape:
            raise ValueError(
                f"as_distribution: the model draws samples of shape {tuple(x.shape[1:])}, not the event_shape "
                f"{tuple(self.event_shape)} given; pass event_shape={tuple(x.shape[1:])}"
            )
        return x.reshape(shape + self.event_shape), log_q.reshape(shape)

    def sample_and_log_prob(self, sample_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`rsample_and_log_prob` without gradients."""
        with torch.no_grad():
            return self.rsample_and_log_prob(sample_shape)

    def rsample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        if not self.has_rsample:
            raise NotImplementedError(
                f"{type(self.model).__name__} has a base that is not reparameterised: use sample(), not rsample()"
            )
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        return self.sample_and_log_prob(sample_shape)[0]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log q(value | context)`` with shape ``value.shape[:-len(event_shape)]``; the value's leading
        dimensions broadcast against ``batch_shape`` as in torch.distributions."""
        events = len(self.event_shape)
        if (
            not isinstance(value, torch.Tensor)
            or value.dim() < events
            or value.shape[value.dim() - events :] != self.event_shape
        ):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            event = ", ".join(map(str, self.event_shape))
            raise ValueError(f"FlowDistribution.log_prob expects values of shape (..., {event}), got {got}")
        leading = value.shape[: value.dim() - events]
        try:
            shape = torch.broadcast_shapes(leading, self.batch_shape)
        except RuntimeError as error:
            raise ValueError(
                f"FlowDistribution.log_prob: the value's leading shape {tuple(leading)} does not broadcast with the "
                f"batch_shape {tuple(self.batch_shape)} (one row per context)"
            ) from error
        if math.prod(shape) == 0:  # before the validation: torch's support check cannot reshape empty values
            return value.new_empty(shape)
        if self._validate_args:
            self._validate_sample(value)
        flat = value.expand(shape + self.event_shape).reshape(-1, *self.event_shape)
        return self.model.log_prob(flat, self._contexts(self._copies(shape))).reshape(shape)

    def expand(self, batch_shape: Any, _instance: Any = None) -> FlowDistribution:
        """The same distribution with leading batch dimensions added (Pyro's plates expand this way);
        ``batch_shape`` must end with the context's batch."""
        return FlowDistribution(
            self.model, self.context, self.event_shape, self._validate_args, batch_shape=torch.Size(batch_shape)
        )
