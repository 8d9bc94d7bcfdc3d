"""normflows' ``nf.distributions.prior`` path: its 2-D densities (``nf.distributions.prior.TwoModes``
etc.), the image density ``ImagePrior`` and the ``PriorDistribution`` interface.

``TwoModes``, ``Sinusoidal`` and ``Smiley`` are flowforge's targets (normflows' formulas, plus
sampling); ``Sinusoidal_split`` and ``Sinusoidal_gap`` are flowforge targets of their own here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ....distributions.targets import LOG_2, Sinusoidal, Smiley, Target, TwoModes
from ....utils.checks import positive_int


class PriorDistribution:
    """normflows' interface of a prior density: ``log_prob(z)``. It cannot be built itself (normflows'
    ``__init__`` raises NotImplementedError); subclasses set their own attributes."""

    def __init__(self) -> None:
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` for a batch ``z``."""
        raise NotImplementedError


class ImagePrior(nn.Module):
    r"""normflows' ``ImagePrior(image, x_range=[-3, 3], y_range=[-3, 3], eps=1e-10)``: a 2-D density
    proportional to the intensities of ``image`` (a 2-D array, row 0 at the top), laid over the box
    ``x_range × y_range``. ``log p(z)`` is the log of the normalised intensity of the pixel under
    ``z`` (points outside the box take the nearest edge pixel); ``sample`` draws by rejection.
    Buffers ``image``, ``image_size``, ``density``, ``scale`` and ``shift`` as in normflows."""

    image: torch.Tensor
    image_size: torch.Tensor
    density: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(
        self,
        image: Any,
        x_range: Any = [-3, 3],  # noqa: B006  # normflows' default, never mutated
        y_range: Any = [-3, 3],  # noqa: B006
        eps: float = 1.0e-10,
    ):
        super().__init__()
        array = np.asarray(image)
        if array.ndim != 2:
            raise ValueError(f"ImagePrior needs a 2-D image, got shape {array.shape}")
        flipped = np.flip(array, 0).transpose() + eps
        self.image_cpu = torch.tensor(flipped / np.max(flipped))
        self.image_size_cpu = self.image_cpu.size()
        self.x_range = torch.tensor(x_range)
        self.y_range = torch.tensor(y_range)
        self.register_buffer("image", self.image_cpu)
        self.register_buffer("image_size", torch.tensor(self.image_size_cpu).unsqueeze(0))
        self.register_buffer("density", torch.log(self.image_cpu / torch.sum(self.image_cpu)))
        self.register_buffer(
            "scale", torch.tensor([[self.x_range[1] - self.x_range[0], self.y_range[1] - self.y_range[0]]])
        )
        self.register_buffer("shift", torch.tensor([[self.x_range[0], self.y_range[0]]]))

    def _pixels(self, unit: torch.Tensor) -> torch.Tensor:
        return (unit * (self.image_size - 1)).long()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` for ``z`` of shape ``(batch, 2)``."""
        if z.dim() != 2 or z.shape[1] != 2:
            raise ValueError(f"ImagePrior.log_prob expects input of shape (batch, 2), got {tuple(z.shape)}")
        index = self._pixels(torch.clamp((z - self.shift) / self.scale, min=0, max=1))
        return self.density[index[:, 0], index[:, 1]]

    def rejection_sampling(self, num_steps: int = 1) -> torch.Tensor:
        """One round of rejection sampling from ``num_steps`` uniform proposals: the accepted ones."""
        like = self.image
        unit = torch.rand((positive_int("num_steps", num_steps), 2), dtype=like.dtype, device=like.device)
        threshold = torch.rand(num_steps, dtype=like.dtype, device=like.device)
        index = self._pixels(unit)
        accepted = self.image[index[:, 0], index[:, 1]] > threshold
        return unit[accepted, :] * self.scale + self.shift

    def sample(self, num_samples: int = 1) -> torch.Tensor:
        """``num_samples`` exact samples (rejection sampling)."""
        positive_int("num_samples", num_samples)
        z = torch.ones((0, 2), dtype=self.image.dtype, device=self.image.device)
        while len(z) < num_samples:
            z = torch.cat([z, self.rejection_sampling(num_samples)[: num_samples - len(z)]], 0)
        return z


class _SinusoidalBranch(Target):
    """A sine ridge that splits into two (:class:`Sinusoidal_gap`, :class:`Sinusoidal_split`):
    ``log p̃ = −½((a − ε)/σ)² + log(1 + exp(−2εa/σ²)) − ½(‖z‖₄/(20σ))⁴`` with
    ``a = |z₂ − sin(2πz₁/T) + w(z₁)/2|`` and ``ε = |w(z₁)/2|``: two Gaussian ridges at
    ``sin(2πz₁/T)`` and ``sin(2πz₁/T) − w(z₁)``, under normflows' quartic envelope."""

    def __init__(self, scale: float, period: float):
        if not (scale > 0 and period > 0):
            raise ValueError(f"{type(self).__name__} needs positive scale and period, got {scale}, {period}")
        self.scale, self.period = float(scale), float(period)
        envelope = 20 * scale * 40**0.25
        height = min(envelope, 4 + 8 * scale)
        super().__init__(((-envelope, envelope), (-height, height)), LOG_2)

    def offset(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        offset = self.offset(z[:, 0])
        eps = torch.abs(offset / 2)
        a = torch.abs(z[:, 1] - torch.sin(2 * math.pi / self.period * z[:, 0]) + offset / 2)
        envelope = torch.linalg.vector_norm(z, ord=4, dim=1) / (20 * self.scale)
        return -0.5 * ((a - eps) / self.scale) ** 2 + F.softplus(-2 * eps * a / self.scale**2) - 0.5 * envelope**4


class Sinusoidal_gap(_SinusoidalBranch):  # noqa: N801  # normflows' name
    r"""normflows' ``Sinusoidal_gap(scale, period)``: the sine ridge with a second ridge below it near
    ``z₁ = 1``, ``w(z₁) = 3 exp(−½((z₁ − 1)/0.6)²)`` (U₃ of Rezende & Mohamed 2015, normflows' form)."""

    def __init__(self, scale: float, period: float):
        super().__init__(scale, period)
        self.w2_scale, self.w2_amp, self.w2_mu = 0.6, 3.0, 1.0

    def offset(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2_amp * torch.exp(-0.5 * ((x - self.w2_mu) / self.w2_scale) ** 2)


class Sinusoidal_split(_SinusoidalBranch):  # noqa: N801  # normflows' name
    r"""normflows' ``Sinusoidal_split(scale, period)``: the sine ridge splitting in two for ``z₁ > 1``,
    ``w(z₁) = 3 sigmoid((z₁ − 1)/0.3)`` (U₄ of Rezende & Mohamed 2015, normflows' form)."""

    def __init__(self, scale: float, period: float):
        super().__init__(scale, period)
        self.w3_scale, self.w3_amp, self.w3_mu = 0.3, 3.0, 1.0

    def offset(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3_amp * torch.sigmoid((x - self.w3_mu) / self.w3_scale)


__all__ = [
    "ImagePrior",
    "PriorDistribution",
    "Sinusoidal",
    "Sinusoidal_gap",
    "Sinusoidal_split",
    "Smiley",
    "TwoModes",
]
