"""Autoregressive flows on a MADE conditioner: the shared machinery, MAF and IAF."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nets.made import MADE, Activation, check_retired_arguments
from .base import EventFlow
from .coupling import affine_transform


class AutoregressiveFlow(EventFlow):
    r"""An elementwise map ``xᵢ = τ(zᵢ; θᵢ(x_{<i}, c))`` whose parameters come from a MADE on ``x``.

    Cheap direction: ``inverse`` (density), one MADE pass on ``x``. ``forward`` (sampling) takes
    D passes, each fixing one more coordinate in the autoregressive order. Subclasses give the
    elementwise map in :meth:`elementwise`. Takes a context when its MADE has ``context_features``.
    """

    def __init__(self, made: MADE):
        super().__init__((made.features,))
        self.made = made
        self.takes_context = made.context is not None  # the MADE has a context input

    def elementwise(
        self, values: torch.Tensor, params: torch.Tensor, inverse: bool, features: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``τ`` (or its inverse) to ``values`` ``(batch, n)``, the columns ``features`` of the
        event, with ``params`` of shape ``(batch, n, P)``; return values and elementwise
        log-derivatives of the direction applied."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # Step k fixes the k-th feature of the order from the ones before it: a MADE pass to the
        # last hidden layer, then only that feature's output rows and its elementwise map.
        self.check_input(z)
        x = torch.zeros_like(z)
        log_det = z.new_zeros(z.shape[0])
        for feature in self.made.sequence:
            params = self.made.feature_outputs(self.made.hidden_state(x, context), feature)
            column = slice(feature, feature + 1)
            value, log_derivative = self.elementwise(z[:, column], params, inverse=False, features=column)
            x = torch.cat([x[:, :feature], value, x[:, feature + 1 :]], 1)
            log_det = log_det + log_derivative[:, 0]
        return x, log_det

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        z, log_derivative = self.elementwise(x, self.made(x, context), inverse=True)
        return z, log_derivative.sum(1)


class MaskedAffineAutoregressive(AutoregressiveFlow):
    r"""Masked autoregressive flow layer (MAF; Papamakarios et al. 2017, https://arxiv.org/abs/1705.07057).

    ``xᵢ = zᵢ exp(sᵢ(x_{<i}, c)) + mᵢ(x_{<i}, c)``, ``log|det ∂x/∂z| = Σᵢ sᵢ``, with ``(m, s)`` from a
    :class:`~flowforge.nets.MADE` on ``x`` and an optional context ``c``; ``s`` is soft-clamped to
    ``±clamp``.

    Cheap direction: ``inverse`` (density), one MADE pass:
    ``zᵢ = (xᵢ − mᵢ(x)) exp(−sᵢ(x))``. ``forward`` (sampling) takes D sequential passes. Starts at
    the identity (MADE's output layer is zero). See :class:`~flowforge.nets.MADE` for the
    conditioner's arguments.
    """

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        use_residual_blocks: bool = True,
        random_mask: bool = False,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        *,
        order: torch.Tensor | None = None,
        clamp: float | None = 5.0,
        **retired,
    ):
        check_retired_arguments("flows.MaskedAffineAutoregressive", retired)
        made = MADE(
            features, hidden_features, context_features, num_blocks, 2, use_residual_blocks, random_mask,
            activation, dropout_probability, order=order, parameter_major=True,
        )  # fmt: skip
        super().__init__(made)
        self.clamp = clamp

    def elementwise(
        self, values: torch.Tensor, params: torch.Tensor, inverse: bool, features: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, log_derivative = affine_transform(values, params[..., 0], params[..., 1], inverse, self.clamp)
        assert log_derivative is not None  # there is a log-scale
        return out, log_derivative


class InverseAutoregressive(EventFlow):
    r"""Inverse autoregressive flow layer (IAF; Kingma et al. 2016, https://arxiv.org/abs/1606.04934).

    The MAF layer run backwards: ``xᵢ = (zᵢ − mᵢ(z_{<i}, c)) exp(−sᵢ(z_{<i}, c))``, so the
    parameters depend on the *input* ``z``. Cheap direction: ``forward`` (sampling, one MADE pass),
    as variational inference wants; ``inverse`` (density) takes D sequential passes. Takes the
    arguments of :class:`MaskedAffineAutoregressive`, and a context when built with ``context_features``.
    """

    def __init__(self, *args, **kwargs):
        maf = MaskedAffineAutoregressive(*args, **kwargs)
        super().__init__(maf.shape)
        self.maf = maf
        self.takes_context = maf.takes_context

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.maf.inverse(z, context)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.maf(x, context)
