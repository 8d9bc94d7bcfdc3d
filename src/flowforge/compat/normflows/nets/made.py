r"""normflows' ``nf.nets.made``: nflows' MADE (Germain et al. 2015, https://arxiv.org/abs/1502.03509)
with normflows' structure, buffers, parameter names and numerics.

Degrees: input ``i`` has degree ``i + 1`` (a random permutation of them with ``permute_mask``);
hidden units get ``1 … D−1`` cyclically (or random degrees with ``random_mask``); a hidden unit
of degree ``k`` sees inputs of degree ``≤ k``, an output of degree ``d`` sees hidden units of
degree ``< d``. Outputs are feature-major: ``output[:, d·M + j]`` is parameter ``j`` of feature
``d`` (``M = output_multiplier``), shape ``(batch, D·M)``. Residual blocks add
``W₂ drop(act(W₁ act(h)))`` gated by the context (GLU); the context also enters after the first
layer, unmasked. flowforge's native :class:`~flowforge.nets.MADE` has another layout (output
``(batch, D, M)``, additive context, zero output layer, no batch norm).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.nn import tile

Activation = Callable[[torch.Tensor], torch.Tensor]


def _get_input_degrees(in_features: int) -> torch.Tensor:
    """The degrees ``1 … in_features`` of MADE's inputs."""
    return torch.arange(1, in_features + 1)


class MaskedLinear(nn.Linear):
    """normflows' ``MaskedLinear(in_degrees, out_features, autoregressive_features, random_mask,
    is_output, bias=True, out_degrees_=None)``: a linear layer whose weight is multiplied by the
    connectivity mask of the degrees (buffers ``mask`` and ``degrees``, the output degrees)."""

    mask: torch.Tensor
    degrees: torch.Tensor

    def __init__(
        self,
        in_degrees: torch.Tensor,
        out_features: int,
        autoregressive_features: int,
        random_mask: bool,
        is_output: bool,
        bias: bool = True,
        out_degrees_: torch.Tensor | None = None,
    ):
        super().__init__(len(in_degrees), out_features, bias=bias)
        mask, degrees = self._get_mask_and_degrees(
            in_degrees, out_features, autoregressive_features, random_mask, is_output, out_degrees_
        )
        self.register_buffer("mask", mask)
        self.register_buffer("degrees", degrees)

    @classmethod
    def _get_mask_and_degrees(
        cls,
        in_degrees: torch.Tensor,
        out_features: int,
        autoregressive_features: int,
        random_mask: bool,
        is_output: bool,
        out_degrees_: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask, output degrees)``. Unit ``o`` may read input ``i`` when ``deg(o) − deg(i) ≥ gap``,
        with ``gap = 1`` for the output layer (a strict ordering, so no output sees its own feature)
        and ``0`` for hidden layers. Degrees are integers throughout."""
        d = autoregressive_features
        if is_output:
            # Feature-major outputs: each feature's degree repeated once per parameter.
            per_feature = _get_input_degrees(d) if out_degrees_ is None else out_degrees_
            degrees = tile(per_feature, out_features // d)
        elif random_mask:
            # Uniform over [lowest reachable degree, d − 1]; the draw is normflows' randint call.
            floor = min(int(in_degrees.min().item()), d - 1)
            degrees = torch.randint(floor, d, [out_features], dtype=torch.long)
        elif d > 1:
            degrees = 1 + torch.arange(out_features) % (d - 1)  # 1, 2, …, d−1, 1, 2, …
        else:
            degrees = torch.full((out_features,), d - 1, dtype=torch.long)  # degenerate: one degree
        gap = 1 if is_output else 0
        mask = (degrees.unsqueeze(1) - in_degrees.unsqueeze(0)).ge(gap).float()
        return mask, degrees

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MaskedFeedforwardBlock(nn.Module):
    """normflows' ``MaskedFeedforwardBlock(in_degrees, autoregressive_features, context_features=None,
    random_mask=False, activation=F.relu, dropout_probability=0.0, use_batch_norm=False)``:
    ``drop(act(masked_linear(BN(h))))``, as wide as its input. Takes no context (as in normflows)."""

    def __init__(
        self,
        in_degrees: torch.Tensor,
        autoregressive_features: int,
        context_features: int | None = None,
        random_mask: bool = False,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
    ):
        super().__init__()
        features = len(in_degrees)
        self.batch_norm = nn.BatchNorm1d(features, eps=1e-3) if use_batch_norm else None
        if context_features is not None:
            raise NotImplementedError("MADE's feedforward blocks take no context; use residual blocks")
        self.linear = MaskedLinear(in_degrees, features, autoregressive_features, random_mask, is_output=False)
        self.degrees = self.linear.degrees
        self.activation = activation
        self.dropout = nn.Dropout(p=dropout_probability)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None:
            raise NotImplementedError("MADE's feedforward blocks take no context")
        outputs = self.batch_norm(inputs) if self.batch_norm else inputs
        return self.dropout(self.activation(self.linear(outputs)))


class MaskedResidualBlock(nn.Module):
    """normflows' ``MaskedResidualBlock(in_degrees, autoregressive_features, context_features=None,
    random_mask=False, activation=F.relu, dropout_probability=0.0, use_batch_norm=False,
    zero_initialization=True)``: ``h + W₂ drop(act(BN(W₁ act(BN(h)))))`` with masked ``W₁, W₂``,
    the residual gated by the context (``GLU([t, V c])``). Sequential degrees only."""

    def __init__(
        self,
        in_degrees: torch.Tensor,
        autoregressive_features: int,
        context_features: int | None = None,
        random_mask: bool = False,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
        zero_initialization: bool = True,
    ):
        if random_mask:
            raise ValueError("MaskedResidualBlock needs the natural (non-random) degree order; got random_mask=True")
        super().__init__()
        features = len(in_degrees)
        if context_features is not None:
            self.context_layer = nn.Linear(context_features, features)
        self.use_batch_norm = use_batch_norm
        if use_batch_norm:
            self.batch_norm_layers = nn.ModuleList(nn.BatchNorm1d(features, eps=1e-3) for _ in range(2))
        first = MaskedLinear(in_degrees, features, autoregressive_features, False, is_output=False)
        second = MaskedLinear(first.degrees, features, autoregressive_features, False, is_output=False)
        self.linear_layers = nn.ModuleList([first, second])
        self.degrees = second.degrees
        if bool((self.degrees < in_degrees).any()):
            raise RuntimeError(
                f"MaskedResidualBlock: expected each output degree to be at least the input degree it adds to, "
                f"got output degrees {self.degrees.tolist()} for input degrees {in_degrees.tolist()}"
            )
        self.activation = activation
        self.dropout = nn.Dropout(p=dropout_probability)
        if zero_initialization:
            nn.init.uniform_(second.weight, a=-1e-3, b=1e-3)
            nn.init.uniform_(second.bias, a=-1e-3, b=1e-3)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # Two pre-activation stages (optional batch norm, activation, masked linear); dropout only
        # ahead of the second. The context, when given, gates the residual elementwise (GLU).
        residual = inputs
        for stage, linear in enumerate(self.linear_layers):
            if self.use_batch_norm:
                residual = self.batch_norm_layers[stage](residual)
            residual = self.activation(residual)
            residual = linear(self.dropout(residual) if stage == 1 else residual)
        if context is not None:
            residual = F.glu(torch.cat((residual, self.context_layer(context)), dim=1), dim=1)
        return inputs + residual


class MADE(nn.Module):
    """normflows' ``MADE(features, hidden_features, context_features=None, num_blocks=2,
    output_multiplier=1, use_residual_blocks=True, random_mask=False, permute_mask=False,
    activation=F.relu, dropout_probability=0.0, use_batch_norm=False, preprocessing=None)``:
    ``preprocessing → initial_layer (+ context_layer(c)) → blocks → final_layer``, output
    ``(batch, features · output_multiplier)``, feature-major. Residual blocks cannot have random
    masks; feedforward blocks take no context."""

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        output_multiplier: int = 1,
        use_residual_blocks: bool = True,
        random_mask: bool = False,
        permute_mask: bool = False,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
        preprocessing: nn.Module | None = None,
    ):
        if use_residual_blocks and random_mask:
            raise ValueError(
                "MADE: residual blocks need the natural degree order (use_residual_blocks=False with random_mask)"
            )
        super().__init__()
        self.preprocessing = nn.Identity() if preprocessing is None else preprocessing
        input_degrees = _get_input_degrees(features)
        if permute_mask:
            input_degrees = input_degrees[torch.randperm(features)]
        self.initial_layer = MaskedLinear(input_degrees, hidden_features, features, random_mask, is_output=False)
        if context_features is not None:
            self.context_layer = nn.Linear(context_features, hidden_features)
        block: type[MaskedResidualBlock] | type[MaskedFeedforwardBlock] = (
            MaskedResidualBlock if use_residual_blocks else MaskedFeedforwardBlock
        )
        blocks: list[nn.Module] = []
        degrees: torch.Tensor = self.initial_layer.degrees
        for _ in range(num_blocks):
            blocks.append(
                block(
                    in_degrees=degrees,
                    autoregressive_features=features,
                    context_features=context_features,
                    random_mask=random_mask,
                    activation=activation,
                    dropout_probability=dropout_probability,
                    use_batch_norm=use_batch_norm,
                )  # fmt: skip
            )
            degrees = blocks[-1].degrees  # type: ignore[assignment]
        self.blocks = nn.ModuleList(blocks)
        self.final_layer = MaskedLinear(
            degrees, features * output_multiplier, features, random_mask, is_output=True, out_degrees_=input_degrees
        )

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        outputs = self.initial_layer(self.preprocessing(inputs))
        if context is not None:
            outputs = outputs + self.context_layer(context)
        for block in self.blocks:
            outputs = block(outputs, context)
        return self.final_layer(outputs)


__all__ = ["MADE", "MaskedFeedforwardBlock", "MaskedLinear", "MaskedResidualBlock"]
