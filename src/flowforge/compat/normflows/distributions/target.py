"""normflows' ``nf.distributions.target`` path: ``nf.distributions.target.TwoMoons()`` and the like.

``Target`` is normflows' base class of targets, ``Target(prop_scale, prop_shift)``: subclasses set
``n_dims`` and ``max_log_prob`` and get rejection sampling from the uniform proposal on
``[prop_shift, prop_shift + prop_scale]^n_dims``. ``TwoMoons``, ``CircularGaussianMixture`` and
``RingMixture`` are flowforge's targets (same formulas; sampled exactly or with flowforge's
envelope) with normflows' buffers in their ``state_dict``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ....distributions import targets as native
from ....utils.checks import positive_int


def _proposal_box(target: torch.nn.Module, prop_scale: torch.Tensor, prop_shift: torch.Tensor) -> None:
    target.register_buffer("prop_scale", torch.as_tensor(prop_scale).clone())
    target.register_buffer("prop_shift", torch.as_tensor(prop_shift).clone())


def _rejection_sampling(target: Any, num_steps: int) -> torch.Tensor:
    """normflows' ``rejection_sampling``: ``num_steps`` uniform proposals on the box
    ``prop_shift + prop_scale · [0, 1]^n_dims``, each kept with probability ``exp(log p̃ − max_log_prob)``."""
    like = target.prop_scale
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    eps = torch.rand((positive_int("num_steps", num_steps), target.n_dims), dtype=dtype, device=like.device)
    z = target.prop_scale * eps + target.prop_shift
    threshold = torch.rand(num_steps, dtype=dtype, device=like.device)
    return z[torch.exp(target.log_prob(z) - target.max_log_prob) > threshold, :]


class Target(native.Target):
    r"""normflows' ``Target(prop_scale=torch.tensor(6.0), prop_shift=torch.tensor(-3.0))``, the base of
    targets written for normflows: a subclass sets ``n_dims`` and ``max_log_prob`` (an upper bound of
    ``log_prob``) and implements ``log_prob``; ``sample`` then draws by rejection from the uniform
    proposal on ``[prop_shift, prop_shift + prop_scale]^n_dims`` (buffers ``prop_scale`` and
    ``prop_shift``, as in normflows). It is a flowforge :class:`~flowforge.distributions.Target`; a
    conditional one sets ``takes_context = True`` (the losses then pass the context)."""

    prop_scale: torch.Tensor
    prop_shift: torch.Tensor

    def __init__(
        self,
        prop_scale: torch.Tensor = torch.tensor(6.0),  # noqa: B008  # normflows' default
        prop_shift: torch.Tensor = torch.tensor(-3.0),  # noqa: B008
    ):
        low, high = float(prop_shift), float(prop_shift + prop_scale)
        super().__init__(((low, high), (low, high)), 0.0)
        _proposal_box(self, prop_scale, prop_shift)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is a base class: a target defines log_prob(z)")

    def rejection_sampling(self, num_steps: int = 1) -> torch.Tensor:
        """One round of rejection sampling from ``num_steps`` proposals: the accepted ones."""
        return _rejection_sampling(self, num_steps)

    def sample(self, num_samples: int = 1) -> torch.Tensor:
        """``num_samples`` samples, by rounds of :meth:`rejection_sampling`."""
        positive_int("num_samples", num_samples)
        like = self.prop_scale
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        z = torch.zeros((0, self.n_dims), dtype=dtype, device=like.device)
        while len(z) < num_samples:
            z = torch.cat([z, self.rejection_sampling(num_samples)[: num_samples - len(z)]], 0)
        return z


class TwoMoons(native.TwoMoons):
    """normflows' ``TwoMoons()``: flowforge's :class:`~flowforge.distributions.TwoMoons` with normflows'
    proposal buffers ``prop_scale`` (6) and ``prop_shift`` (−3) and ``rejection_sampling``. ``sample``
    is flowforge's (its envelope bounds ``log p̃ ≤ log 2``; normflows' ``max_log_prob = 0`` clips it)."""

    prop_scale: torch.Tensor
    prop_shift: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        _proposal_box(self, torch.tensor(6.0), torch.tensor(-3.0))

    def rejection_sampling(self, num_steps: int = 1) -> torch.Tensor:
        return _rejection_sampling(self, num_steps)


class RingMixture(native.RingMixture):
    """normflows' ``RingMixture(n_rings=2)``: flowforge's :class:`~flowforge.distributions.RingMixture`
    with normflows' proposal buffers ``prop_scale`` (6) and ``prop_shift`` (−3) and
    ``rejection_sampling``; ``sample`` is flowforge's."""

    prop_scale: torch.Tensor
    prop_shift: torch.Tensor

    def __init__(self, n_rings: int = 2):
        super().__init__(n_rings)
        _proposal_box(self, torch.tensor(6.0), torch.tensor(-3.0))

    def rejection_sampling(self, num_steps: int = 1) -> torch.Tensor:
        return _rejection_sampling(self, num_steps)


class CircularGaussianMixture(native.CircularGaussianMixture):
    r"""normflows' ``CircularGaussianMixture(n_modes=8)``: flowforge's
    :class:`~flowforge.distributions.CircularGaussianMixture`; its ``state_dict`` holds normflows'
    buffer ``scale`` (``⅔ sin(π/n)``, float32), which loading checks against the number of modes."""

    def __init__(self, n_modes: int = 8):
        super().__init__(n_modes)
        self._register_state_dict_hook(_save_scale)
        self._register_load_state_dict_pre_hook(self._load_scale)

    def _load_scale(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        value = state.pop(prefix + "scale", None)
        if value is not None and not math.isclose(float(value), self.scale, rel_tol=1e-5):
            raise ValueError(
                f"CircularGaussianMixture: the saved scale {float(value)} is not this mixture's {self.scale} "
                f"(n_modes={self.n_modes})"
            )


def _save_scale(module: Any, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    state[prefix + "scale"] = torch.tensor(module.scale, dtype=torch.float32, device=module.means.device)


class TwoIndependent(Target):
    r"""normflows' ``TwoIndependent(target1, target2)``: the product ``p(z) = p₁(z₁) p₂(z₂)`` of two
    densities on the two halves of ``z`` (first and second half along dimension 1), the target of
    augmented normalizing flows (Huang et al. 2020, https://arxiv.org/abs/2002.07101)."""

    def __init__(self, target1: torch.nn.Module, target2: torch.nn.Module):
        super().__init__()
        self.target1: Any = target1
        self.target2: Any = target2

    def check_input(self, z: torch.Tensor) -> None:
        if z.dim() < 2 or z.shape[1] % 2:
            raise ValueError(f"TwoIndependent expects (batch, 2k, ...) input, got {tuple(z.shape)}")

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        z1, z2 = z.chunk(2, dim=1)
        return self.target1.log_prob(z1) + self.target2.log_prob(z2)

    def sample(self, num_samples: int = 1) -> torch.Tensor:
        return torch.cat([self.target1.sample(num_samples), self.target2.sample(num_samples)], 1)


class ConditionalDiagGaussian(Target):
    r"""normflows' conditional target ``ConditionalDiagGaussian()``: ``p(z | c) = N(z; μ, diag σ²)`` with
    ``c = [μ, σ]`` (the first half of each context row the mean, the second the standard deviation).
    It declares ``takes_context``, so the losses pass the context."""

    takes_context = True

    @staticmethod
    def _split(context: torch.Tensor | None, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
        if context is None or context.dim() != 2 or context.shape[1] % 2:
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"ConditionalDiagGaussian.{owner} needs a context (batch, 2·d) = [mean, std], got {got}")
        loc, scale = context.chunk(2, dim=1)
        return loc, scale

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        loc, scale = self._split(context, "log_prob")
        if z.dim() != 2 or z.shape != loc.shape:
            raise ValueError(
                f"ConditionalDiagGaussian.log_prob: z {tuple(z.shape)} must match the context's mean {tuple(loc.shape)}"
            )
        d = z.shape[-1]
        return -0.5 * d * math.log(2 * math.pi) - torch.sum(torch.log(scale) + 0.5 * ((z - loc) / scale) ** 2, dim=-1)

    def sample(self, num_samples: int = 1, context: torch.Tensor | None = None) -> torch.Tensor:
        loc, scale = self._split(context, "sample")
        eps = torch.randn((positive_int("num_samples", num_samples), loc.shape[1]), dtype=loc.dtype, device=loc.device)
        return loc + scale * eps


__all__ = [
    "CircularGaussianMixture",
    "ConditionalDiagGaussian",
    "RingMixture",
    "Target",
    "TwoIndependent",
    "TwoMoons",
]
