"""normflows' ``nf.core`` path: its model classes on flowforge's :mod:`flowforge.model`.

``NormalizingFlow`` and ``MultiscaleFlow`` are flowforge's own (their positional orders are
normflows'). ``ConditionalNormalizingFlow`` and ``ClassCondFlow`` are thin subclasses of
:class:`~flowforge.model.NormalizingFlow` that take normflows' positional orders
(``reverse_kld(num_samples, context, beta, score_fn)``, ``sample(num_samples, y)``) and map them
onto the native calls, where the context is one keyword for every model. ``MultiscaleFlow`` here is a
thin subclass of :class:`~flowforge.model.MultiscaleFlow` whose ``forward(x, y)`` is normflows'
``−log q(x | y)`` and whose temperature is normflows' (``set_temperature``). ``NormalizingFlowVAE``
is normflows' flow VAE on its encoders and decoders (:mod:`.distributions.encoder`, ``.decoder``).
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
from ...model import MultiscaleFlow as _NativeMultiscaleFlow
from ...model import NormalizingFlow
from .distributions.encoder import BaseEncoder, Dirac


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
        """Samples of class ``y`` and their ``log q(x | y)``; see :meth:`flowforge.model.NormalizingFlow.sample`.
        As in normflows, labels ``y`` given as a tensor set the number of samples (one per label), and
        ``num_samples`` is then not used. A base with normflows' ``temperature`` attribute (the compat
        bases) is tempered through it, as :meth:`MultiscaleFlow.sample` does."""
        if isinstance(y, torch.Tensor):
            num_samples = len(y)
        if temperature is not None and hasattr(self.q0, "temperature"):
            previous = getattr(self.q0, "temperature")  # noqa: B009  # a plain attribute, not a tensor
            setattr(self.q0, "temperature", temperature)  # noqa: B010
            try:
                return super().sample(num_samples, y)  # type: ignore[arg-type]  # the base takes int labels
            finally:
                setattr(self.q0, "temperature", previous)  # noqa: B010
        return super().sample(num_samples, y, temperature)  # type: ignore[arg-type]

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``log q(x | y)``, shape ``(batch,)``."""
        return super().log_prob(x, y)

    def forward_kld(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``−mean log q(x | y)`` for pairs ``(x, y)`` from the data."""
        return super().forward_kld(x, y)


class MultiscaleFlow(_NativeMultiscaleFlow):
    r"""normflows' ``MultiscaleFlow(q0, flows, merges, transform=None, class_cond=True)``: flowforge's
    :class:`~flowforge.model.MultiscaleFlow` with normflows' meaning of ``forward``,
    ``forward(x, y) = −log q(x | y)`` (the negative log-likelihood to minimise), labels named ``y``,
    and normflows' temperature: ``sample(..., temperature=T)`` sets the bases' ``temperature``
    attribute (:meth:`set_temperature`) for the draw and resets it, with gradients as usual; bases
    without that attribute are tempered the flowforge way (their ``log_scale``, without gradients).
    Labels given as a tensor set the number of samples, as in normflows.

    normflows' default ``class_cond=True`` with bases that take no labels (``DiagGaussian``, an
    unconditional ``GlowBase``) builds an unconditional model, as in normflows, where such bases
    ignore the labels: ``y`` is then not used. (flowforge's own class refuses that combination.)"""

    def __init__(
        self,
        q0: Iterable[BaseDistribution],
        flows: Iterable[Iterable[Flow]],
        merges: Iterable[Flow],
        transform: Flow | None = None,
        class_cond: bool = True,
        p: nn.Module | None = None,
    ):
        q0 = list(q0)
        ignores_labels = class_cond and not any(getattr(base, "takes_context", False) for base in q0)
        super().__init__(q0, flows, merges, transform, class_cond and not ignores_labels, p)
        self.ignores_labels = ignores_labels

    def _labels(self, y: Any) -> Any:
        return None if self.ignores_labels else y

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """``−log q(x | y)``, shape ``(batch,)``."""
        return -self.log_prob(x, y)

    def forward_kld(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``−mean log q(x | y)``."""
        return -torch.mean(self.log_prob(x, y))

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``log q(x | y)`` (``y`` only for a class-conditional model), shape ``(batch,)``."""
        return super().log_prob(x, self._labels(y))

    def sample(
        self, num_samples: int = 1, y: torch.Tensor | int | None = None, temperature: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_samples`` samples (of classes ``y``) and their log-density."""
        y = self._labels(y)
        if isinstance(y, torch.Tensor):
            num_samples = len(y)
        if temperature is None or not all(hasattr(base, "temperature") for base in self.q0):
            return super().sample(num_samples, y, temperature)  # type: ignore[arg-type]  # int labels too
        self.set_temperature(temperature)
        try:
            return super().sample(num_samples, y)  # type: ignore[arg-type]
        finally:
            self.reset_temperature()

    def set_temperature(self, temperature: float | None) -> None:
        """Set the ``temperature`` attribute of every base (NotImplementedError for a base without one,
        as in normflows)."""
        for base in self.q0:
            if not hasattr(base, "temperature"):
                raise NotImplementedError(
                    f"base {type(base).__name__} does not support temperature annealed sampling "
                    "(it has no temperature attribute)"
                )
            setattr(base, "temperature", temperature)  # noqa: B010  # a plain attribute of any base

    def reset_temperature(self) -> None:
        """Set the bases' temperature back to None."""
        self.set_temperature(None)


class NormalizingFlowVAE(nn.Module):
    r"""normflows' ``NormalizingFlowVAE(prior, q0=Dirac(), flows=None, decoder=None)``: a VAE whose
    approximate posterior is an encoder ``q0(z | x)`` followed by flow layers (Rezende & Mohamed 2015).

    ``forward(x, num_samples)`` draws ``num_samples`` latents per row of ``x``, pushes them through the
    layers and returns ``(z, log q(z | x), log p(x, z))``, each with leading axes
    ``(batch, num_samples)``: ``log q = log q0 − Σ log|det|`` and ``log p = log prior(z)`` plus the
    decoder's ``log p(x | z)`` when there is one. ``−mean(log p − log q)`` is the negative ELBO.
    Without ``q0`` the encoder is a :class:`~flowforge.compat.normflows.distributions.encoder.Dirac`.
    flowforge's own flow VAE is :class:`flowforge.vae.FlowVAE`.
    """

    def __init__(
        self,
        prior: Any,
        q0: BaseEncoder | None = None,
        flows: Iterable[nn.Module] | None = None,
        decoder: nn.Module | None = None,
    ):
        super().__init__()
        if not callable(getattr(prior, "log_prob", None)):
            raise TypeError(f"NormalizingFlowVAE: prior must have a log_prob method, got {type(prior).__name__}")
        self.prior = prior
        self.decoder: Any = decoder
        self.flows = nn.ModuleList(flows)
        self.q0 = Dirac() if q0 is None else q0

    def forward(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, log_q = self.q0(x, num_samples=num_samples)
        z = z.reshape(-1, *z.shape[2:])
        log_q = log_q.reshape(-1, *log_q.shape[2:])
        for flow in self.flows:
            z, log_det = flow(z)
            log_q = log_q - log_det
        log_p = self.prior.log_prob(z)
        if self.decoder is not None:
            log_p = log_p + self.decoder.log_prob(x, z)
        z = z.reshape(-1, num_samples, *z.shape[1:])
        log_q = log_q.reshape(-1, num_samples, *log_q.shape[1:])
        log_p = log_p.reshape(-1, num_samples, *log_p.shape[1:])
        return z, log_q, log_p


__all__ = [
    "ClassCondFlow",
    "ConditionalNormalizingFlow",
    "MultiscaleFlow",
    "NormalizingFlow",
    "NormalizingFlowVAE",
]
