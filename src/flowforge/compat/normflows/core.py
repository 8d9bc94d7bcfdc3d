"""normflows' ``nf.core`` path: its model classes on flowforge's :mod:`flowforge.model`.

``NormalizingFlow`` and ``MultiscaleFlow`` are flowforge's own (their positional orders are
normflows'). ``ConditionalNormalizingFlow`` and ``ClassCondFlow`` are thin subclasses of
:class:`~flowforge.model.NormalizingFlow` that take normflows' positional orders
(``reverse_kld(num_samples, context, beta, score_fn)``, ``sample(num_samples, y)``) and map them
onto the native calls, where the context is one keyword for every model.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ... import losses
from ...distributions.base import BaseDistribution
from ...distributions.targets import Target
from ...flows.base import Flow
from ...model import MultiscaleFlow, NormalizingFlow


def _takes_context_as_normflows(target: Any) -> bool:
    """Whether a target that is not a flowforge :class:`~flowforge.distributions.Target` is conditional
    in normflows' (or flowforge 0.1's) way: ``log_prob(z, context)`` or ``takes_context = True``.
    flowforge's own targets declare it with ``Target.takes_context``, which the losses read."""
    if isinstance(target, Target):
        return False
    return bool(getattr(target, "takes_context", False)) or "context" in inspect.signature(target.log_prob).parameters


class _ConditionalTarget(Target):
    """A normflows-style conditional target as a flowforge Target that takes the context (for the losses)."""

    takes_context = True
    target: Any

    def __init__(self, target: nn.Module):
        nn.Module.__init__(self)  # no plotting box: this adapter only evaluates log_prob
        self.__dict__["target"] = target  # not a submodule: the model owns the target as p

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.target.log_prob(z, context)


class _WithTarget:
    """A model seen with another target ``p`` (everything else is the model's)."""

    def __init__(self, model: nn.Module, p: nn.Module):
        self._model, self.p = model, p

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class ConditionalNormalizingFlow(NormalizingFlow):
    r"""normflows' conditional flow ``q(x | c)``: flowforge's :class:`~flowforge.model.NormalizingFlow`
    with normflows' positional order for :meth:`reverse_kld`, ``(num_samples, context, beta, score_fn)``.
    Every other method is the native one (``sample(num_samples, context)``, ``log_prob(x, context)``,
    ``forward_kld(x, context)``). The model must be conditional: a conditional base or a layer that
    takes a context."""

    def __init__(self, q0: BaseDistribution, flows: Iterable[Flow], p: nn.Module | None = None):
        super().__init__(q0, flows, p)
        if not self.takes_context:
            raise ValueError(
                f"{type(self).__name__} needs a conditional base or at least one layer that takes a context "
                "(e.g. built with context_features)"
            )

    def reverse_kld(  # type: ignore[override]  # normflows' positional order
        self,
        num_samples: int = 1,
        context: torch.Tensor | None = None,
        beta: float | torch.Tensor = 1.0,
        score_fn: bool = True,
    ) -> torch.Tensor:
        """Reverse KL at ``context`` (normflows' order); see :meth:`flowforge.model.NormalizingFlow.reverse_kld`.
        As in normflows, a target with ``log_prob(z, context)`` (or ``takes_context = True``) receives the
        context even when it is not a flowforge :class:`~flowforge.distributions.Target`."""
        if self.p is not None and _takes_context_as_normflows(self.p):
            model = _WithTarget(self, _ConditionalTarget(self.p))
            return losses.reverse_kl(model, num_samples, beta, score_fn, context=context)  # type: ignore[arg-type]
        return super().reverse_kld(num_samples, beta, score_fn, context=context)


class ClassCondFlow(ConditionalNormalizingFlow):
    r"""normflows' class-conditional flow ``q(x | y)``: a :class:`ConditionalNormalizingFlow` on a
    class-conditional base (:class:`~flowforge.distributions.ClassCondDiagGaussian`), with the
    labels named ``y`` as in normflows: ``sample(num_samples, y)``, ``log_prob(x, y)``,
    ``forward_kld(x, y)``. Labels are indices ``(batch,)``, one-hot rows or, for ``sample``, an int
    for every sample; without labels ``sample`` draws random classes. Layers that take a context
    receive the labels one-hot."""

    def __init__(self, q0: BaseDistribution, flows: Iterable[Flow], p: nn.Module | None = None):
        if not (q0.takes_context and hasattr(q0, "num_classes")):
            raise ValueError(f"{type(self).__name__} needs a class-conditional base such as ClassCondDiagGaussian")
        super().__init__(q0, flows, p)

    def sample(
        self, num_samples: int = 1, y: torch.Tensor | int | None = None, temperature: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples of class ``y`` and their ``log q(x | y)``; see :meth:`flowforge.model.NormalizingFlow.sample`."""
        return super().sample(num_samples, y, temperature)  # type: ignore[arg-type]  # the base takes int labels

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``log q(x | y)``, shape ``(batch,)``."""
        return super().log_prob(x, y)

    def forward_kld(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``−mean log q(x | y)`` for pairs ``(x, y)`` from the data."""
        return super().forward_kld(x, y)


__all__ = ["ClassCondFlow", "ConditionalNormalizingFlow", "MultiscaleFlow", "NormalizingFlow"]
