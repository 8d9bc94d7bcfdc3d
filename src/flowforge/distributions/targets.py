"""Unnormalised 2-D test densities ``p̃`` for fitting and benchmarking flows.

Every target is a module (it moves with ``.to(device)`` and ``.double()``) with
``log_prob(z)`` for ``z`` of shape ``(batch, 2)``, ``sample(n)`` (exact or by
rejection from a uniform box), ``bounds`` (a box holding all but a negligible
fraction of the mass, used for rejection sampling, grids and plots) and
``normalized`` (whether ``log_prob`` includes the normaliser).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.checks import positive_int
from ..utils.protocols import LogDensity

LOG_2 = math.log(2.0)


def _finite(owner: str, name: str, value: float, positive: bool = False) -> float:
    """``value`` as a float if it is a finite real number (and positive, with ``positive``), else ValueError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or (positive and number <= 0):
        kind = "a finite positive number" if positive else "a finite number"
        raise ValueError(f"{owner} {name} must be {kind}, got {value!r}")
    return number


def _count(owner: str, name: str, value: int) -> int:
    """``value`` if it is an int ≥ 1 (bools excluded; a float such as 2.5 is refused, not rounded)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} {name} must be a positive int, got {value!r}")
    return value


class Target(nn.Module):
    """Base class of the 2-D targets.

    Args:
        bounds: ``((x_low, x_high), (y_low, y_high))``, a box with negligible mass outside.
        max_log_prob: an upper bound of ``log_prob`` on the box (rejection envelope).
    """

    bounds: torch.Tensor
    n_dims = 2
    normalized = False
    takes_context = False
    """Whether ``log_prob`` takes a context as its second argument (a conditional target ``p̃(x | c)``)."""

    def __init__(self, bounds: tuple[tuple[float, float], tuple[float, float]], max_log_prob: float):
        super().__init__()
        self.register_buffer("bounds", torch.tensor(bounds, dtype=torch.get_default_dtype()), persistent=False)
        self.max_log_prob = float(max_log_prob)

    def check_input(self, z: torch.Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.n_dims:
            raise ValueError(
                f"{type(self).__name__}.log_prob expects input of shape (batch, {self.n_dims}), got {tuple(z.shape)}"
            )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, num_samples: int = 1) -> torch.Tensor:
        """Draw exact samples by rejection from the uniform distribution on ``bounds``."""
        positive_int("num_samples", num_samples)
        low, high = self.bounds[:, 0], self.bounds[:, 1]
        accepted: list[torch.Tensor] = []
        count, rate = 0, 0.05
        while count < num_samples:
            proposals = int(min(max(1.2 * (num_samples - count) / rate, 1024), 2**22))
            z = low + (high - low) * torch.rand(proposals, self.n_dims, dtype=low.dtype, device=low.device)
            log_u = torch.log(torch.rand(proposals, dtype=low.dtype, device=low.device))
            keep = z[log_u < self.log_prob(z) - self.max_log_prob]
            rate = max(keep.shape[0] / proposals, 1e-4)
            accepted.append(keep)
            count += keep.shape[0]
        return torch.cat(accepted)[:num_samples]


class TwoModes(Target):
    r"""Two modes on a ring: ``log p̃(z) = −½((‖z‖ − a)/(2σ))² − ½((|z₁| − a)/(3σ))² + log(1 + exp(−2|z₁|a/(3σ)²))``.

    Modes at ``z₁ = ±a`` (``loc``) on the circle of radius ``a``; ``σ`` is ``scale``.
    The target of the seed demo (``TwoModes(2, 0.1)``), as in normflows.
    """

    def __init__(self, loc: float = 2.0, scale: float = 0.1):
        loc, scale = _finite("TwoModes", "loc", loc), _finite("TwoModes", "scale", scale, positive=True)
        half = abs(loc) + 12 * scale
        super().__init__(((-half, half), (-half, half)), LOG_2)
        self.loc, self.scale = loc, scale

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        a = torch.abs(z[:, 0])
        eps = abs(self.loc)
        radial = (torch.linalg.vector_norm(z, dim=1) - self.loc) / (2 * self.scale)
        across = (a - eps) / (3 * self.scale)
        return F.softplus(a * (-2 * eps / (3 * self.scale) ** 2)) - 0.5 * (radial * radial + across * across)


class TwoMoons(Target):
    r"""Two half-moons on a ring: ``log p̃ = −½((‖z‖ − 2)/0.2)² − ½((|z₁| − 2)/0.3)² + log(1 + exp(−4|z₁|/0.09))``.

    The ``TwoMoons`` density of normflows (not scikit-learn's two-moons data set).
    """

    def __init__(self):
        super().__init__(((-3.5, 3.5), (-3.5, 3.5)), LOG_2)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        a = torch.abs(z[:, 0])
        radial = (torch.linalg.vector_norm(z, dim=1) - 2) / 0.2
        across = (a - 2) / 0.3
        return F.softplus(-4 * a / 0.09) - 0.5 * (radial * radial + across * across)


class CircularGaussianMixture(Target):
    r"""Normalised mixture of ``n_modes`` equal Gaussians at radius 2, ``σ = ⅔ sin(π/n)``.

    ``log p(z) = logsumexp_k(−‖z − μₖ‖²/(2σ²)) − log(2πσ² n)``, ``μₖ = 2 (sin 2πk/n, cos 2πk/n)``.
    Sampled exactly.
    """

    means: torch.Tensor
    normalized = True

    def __init__(self, n_modes: int = 8):
        self.n_modes = n_modes = _count("CircularGaussianMixture", "n_modes", n_modes)
        self.scale = 2 / 3 * math.sin(math.pi / n_modes) if n_modes > 1 else 0.5
        half = 2 + 8 * self.scale
        super().__init__(
            ((-half, half), (-half, half)), -math.log(2 * math.pi * self.scale**2 * n_modes) + math.log(n_modes)
        )
        angles = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
        self.register_buffer(
            "means",
            (2 * torch.stack([torch.sin(angles), torch.cos(angles)], 1)).to(torch.get_default_dtype()),
            persistent=False,
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        squared = torch.cdist(z, self.means.to(z.dtype)) ** 2
        return torch.logsumexp(-squared / (2 * self.scale**2), 1) - math.log(2 * math.pi * self.scale**2 * self.n_modes)

    def sample(self, num_samples: int = 1) -> torch.Tensor:
        mode = torch.randint(0, self.n_modes, (num_samples,), device=self.means.device)
        return self.means[mode] + self.scale * torch.randn(
            num_samples, 2, dtype=self.means.dtype, device=self.means.device
        )


class RingMixture(Target):
    r"""Concentric rings: ``log p̃ = logsumexp_i(−(‖z‖ − 2(i+1)/n)²/(2s²))``, ``s = 1/(4n)``."""

    radii: torch.Tensor

    def __init__(self, n_rings: int = 2):
        self.n_rings = n_rings = _count("RingMixture", "n_rings", n_rings)
        self.scale = 1 / 4 / n_rings
        half = 2 + 8 * self.scale
        super().__init__(((-half, half), (-half, half)), math.log(n_rings))
        self.register_buffer(
            "radii", 2 / n_rings * torch.arange(1, n_rings + 1, dtype=torch.get_default_dtype()), persistent=False
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        distance = torch.linalg.vector_norm(z, dim=1, keepdim=True) - self.radii.to(z.dtype)
        return torch.logsumexp(-(distance * distance) / (2 * self.scale**2), 1)


class Sinusoidal(Target):
    r"""A sine-shaped ridge: ``log p̃ = −½((z₂ − sin(2πz₁/T))/σ)² − ½(‖z‖₄/(20σ))⁴``.

    ``σ`` is ``scale``, ``T`` is ``period``; the quartic envelope makes it normalisable (as in normflows).
    """

    def __init__(self, scale: float = 0.4, period: float = 4.0):
        self.scale = scale = _finite("Sinusoidal", "scale", scale, positive=True)
        self.period = _finite("Sinusoidal", "period", period, positive=True)
        envelope = 20 * scale * 40**0.25
        super().__init__(((-envelope, envelope), (-min(envelope, 1 + 8 * scale), min(envelope, 1 + 8 * scale))), 0.0)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        ridge = (z[:, 1] - torch.sin(2 * math.pi / self.period * z[:, 0])) / self.scale
        envelope = torch.linalg.vector_norm(z, ord=4, dim=1) / (20 * self.scale)
        return -0.5 * ridge * ridge - 0.5 * envelope**4


class Smiley(Target):
    r"""A smile: ``log p̃ = −½((‖z‖ − 2)/(2σ))² − ½((|z₂ + 0.8| − 1.2)/(2σ))²`` (σ = ``scale``)."""

    def __init__(self, scale: float = 0.1):
        self.scale = scale = _finite("Smiley", "scale", scale, positive=True)
        half = 2 + 12 * scale
        super().__init__(((-half, half), (-half, half)), 0.0)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        ring = (torch.linalg.vector_norm(z, dim=1) - 2) / (2 * self.scale)
        mouth = (torch.abs(z[:, 1] + 0.8) - 1.2) / (2 * self.scale)
        return -0.5 * (ring * ring + mouth * mouth)


def _w1(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(math.pi / 2 * z[:, 0])


def _confine(z: torch.Tensor) -> torch.Tensor:
    """``−½((|z₁| − 4)₊ / 0.5)²``: zero on the paper's ``[−4, 4]`` window, a Gaussian tail outside."""
    excess = torch.clamp(torch.abs(z[:, 0]) - 4.0, min=0.0) / 0.5
    return -0.5 * excess * excess


class EnergyU1(Target):
    r"""``U₁(z) = ½((‖z‖ − 2)/0.4)² − log(e^{−½((z₁−2)/0.6)²} + e^{−½((z₁+2)/0.6)²})``; ``log p̃ = −U₁``.

    Rezende & Mohamed (2015), table 1, https://arxiv.org/abs/1505.05770.
    """

    def __init__(self):
        super().__init__(((-5.0, 5.0), (-5.0, 5.0)), LOG_2)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        ring = (torch.linalg.vector_norm(z, dim=1) - 2) / 0.4
        left, right = (z[:, 0] - 2) / 0.6, (z[:, 0] + 2) / 0.6
        return -0.5 * ring * ring + torch.logaddexp(-0.5 * left * left, -0.5 * right * right)


class EnergyU2(Target):
    r"""``U₂(z) = ½((z₂ − w₁(z))/0.4)²``, ``w₁ = sin(2πz₁/4)``; ``log p̃ = −U₂`` (Rezende & Mohamed 2015).

    The paper's ``U₂``–``U₄`` are not integrable along ``z₁``; flowforge multiplies them by
    ``exp(−½((|z₁| − 4)₊/0.5)²)``, which leaves the density unchanged on the ``[−4, 4]``
    window the paper plots and makes it a proper distribution.
    """

    def __init__(self):
        super().__init__(((-7.0, 7.0), (-4.0, 4.0)), 0.0)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        ridge = (z[:, 1] - _w1(z)) / 0.4
        return -0.5 * ridge * ridge + _confine(z)


class EnergyU3(Target):
    r"""``U₃(z) = −log(e^{−½((z₂ − w₁)/0.35)²} + e^{−½((z₂ − w₁ + w₂)/0.35)²})``, ``w₂ = 3 exp(−½((z₁ − 1)/0.6)²)``.

    Rezende & Mohamed (2015); confined along ``z₁`` as described in :class:`EnergyU2`.
    """

    def __init__(self):
        super().__init__(((-7.0, 7.0), (-6.5, 6.5)), LOG_2)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        w2 = 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)
        upper = (z[:, 1] - _w1(z)) / 0.35
        lower = (z[:, 1] - _w1(z) + w2) / 0.35
        return torch.logaddexp(-0.5 * upper * upper, -0.5 * lower * lower) + _confine(z)


class EnergyU4(Target):
    r"""``U₄(z) = −log(e^{−½((z₂ − w₁)/0.4)²} + e^{−½((z₂ − w₁ + w₃)/0.35)²})``, ``w₃ = 3 σ((z₁ − 1)/0.3)``.

    Rezende & Mohamed (2015); confined along ``z₁`` as described in :class:`EnergyU2`.
    """

    def __init__(self):
        super().__init__(((-7.0, 7.0), (-6.5, 6.5)), LOG_2)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        w3 = 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)
        upper = (z[:, 1] - _w1(z)) / 0.4
        lower = (z[:, 1] - _w1(z) + w3) / 0.35
        return torch.logaddexp(-0.5 * upper * upper, -0.5 * lower * lower) + _confine(z)


class GaussianMixture40(Target):
    r"""The 40-mode Gaussian mixture of flow annealed importance sampling (Midgley et al. 2023,
    https://arxiv.org/abs/2208.01893): ``p(z) = 1/40 Σₖ N(z; μₖ, σ²I)`` with means drawn uniformly in
    ``[−40, 40]²`` (from a fixed ``seed``, so the target is the same everywhere) and
    ``σ = softplus(1) ≈ 1.313``. Normalised (``log Z = 0``) and sampled exactly; the modes are far
    apart, so a sampler must find them all.
    """

    means: torch.Tensor
    normalized = True

    def __init__(self, n_modes: int = 40, loc_scaling: float = 40.0, scale: float | None = None, seed: int = 0):
        self.n_modes = n_modes = _count("GaussianMixture40", "n_modes", n_modes)
        loc_scaling = _finite("GaussianMixture40", "loc_scaling", loc_scaling, positive=True)
        softplus_one = float(F.softplus(torch.tensor(1.0)))
        self.scale = softplus_one if scale is None else _finite("GaussianMixture40", "scale", scale, positive=True)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"GaussianMixture40 seed must be an int from 0 to 2**63 - 1, got {seed!r}")
        half = loc_scaling + 6 * self.scale
        super().__init__(((-half, half), (-half, half)), -math.log(2 * math.pi * self.scale**2))
        generator = torch.Generator().manual_seed(seed)
        means = (2 * torch.rand(n_modes, 2, generator=generator, dtype=torch.float64) - 1) * loc_scaling
        self.register_buffer("means", means.to(torch.get_default_dtype()), persistent=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        squared = ((z[:, None, :] - self.means.to(z.dtype)) ** 2).sum(-1)
        return torch.logsumexp(-squared / (2 * self.scale**2), 1) - math.log(2 * math.pi * self.scale**2 * self.n_modes)

    def sample(self, num_samples: int = 1) -> torch.Tensor:
        positive_int("num_samples", num_samples)
        mode = torch.randint(0, self.n_modes, (num_samples,), device=self.means.device)
        noise = torch.randn(num_samples, 2, dtype=self.means.dtype, device=self.means.device)
        return self.means[mode] + self.scale * noise


class ManyWell(Target):
    r"""Many-well energy: ``dim/2`` independent copies of the double well
    ``log p̃(a, b) = −a⁴ + 6a² + ½a − ½b²`` (Noé et al. 2019; the 32-D version with ``2¹⁶`` modes
    is a benchmark of Midgley et al. 2023, https://arxiv.org/abs/2208.01893).

    Coordinates ``(z₀, z₁), (z₂, z₃), …`` are the pairs ``(a, b)``. The normaliser is exact:
    ``log Z = dim/2 · (log ∫exp(−a⁴ + 6a² + ½a) da + ½ log 2π)``, the one-dimensional integral by
    the trapezoid rule in float64 (relative error below 1e-12); :attr:`log_z` holds it. Sampled
    exactly: each ``a`` by inverting its distribution function on that grid, each ``b`` Gaussian.
    ``bounds`` frame the first pair, for plots.
    """

    def __init__(self, dim: int = 32):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"ManyWell needs an even dim >= 2 (an int), got {dim!r}")
        super().__init__(((-3.0, 3.0), (-4.5, 4.5)), 0.0)
        self.n_dims = int(dim)
        grid = torch.linspace(-6.0, 6.0, 200_001, dtype=torch.float64)
        log_density = -(grid**4) + 6 * grid**2 + 0.5 * grid
        peak = float(log_density.max())
        log_z_well = math.log(float(torch.trapezoid(torch.exp(log_density - peak), grid))) + peak
        self.log_z = dim // 2 * (log_z_well + 0.5 * math.log(2 * math.pi))
        self.max_log_prob = dim // 2 * peak
        cdf = torch.cumulative_trapezoid(torch.exp(log_density - peak), grid)
        cdf = torch.cat([cdf.new_zeros(1), cdf]) / cdf[-1]
        # Kept in float64 whatever the module's dtype (not buffers): the sampler inverts this table.
        self._well_grid, self._well_cdf = grid, cdf

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.check_input(z)
        a, b = z[:, 0::2], z[:, 1::2]
        return (-(a**4) + 6 * a * a + 0.5 * a - 0.5 * b * b).sum(1)

    def sample(self, num_samples: int = 1) -> torch.Tensor:
        positive_int("num_samples", num_samples)
        pairs, device = self.n_dims // 2, self.bounds.device
        grid, cdf = self._well_grid.to(device), self._well_cdf.to(device)
        u = torch.rand(num_samples, pairs, dtype=torch.float64, device=device)
        index = torch.searchsorted(cdf, u).clamp(1, cdf.shape[0] - 1)
        low, high = cdf[index - 1], cdf[index]
        fraction = ((u - low) / (high - low).clamp_min(1e-300)).clamp(0, 1)
        a = grid[index - 1] + fraction * (grid[index] - grid[index - 1])
        b = torch.randn(num_samples, pairs, dtype=torch.float64, device=device)
        return torch.stack([a, b], -1).reshape(num_samples, self.n_dims).to(self.bounds.dtype)


class AnnealedTarget(nn.Module):
    r"""A point on the geometric path between a base ``q0`` and a target ``p̃``:
    ``log π_β(z) = (1 − β) log q0(z) + β log p̃(z)`` (normflows' ``LinearInterpolation``). The
    intermediate targets of stochastic layers (:class:`~flowforge.flows.MetropolisHastings`,
    :class:`~flowforge.flows.HamiltonianMonteCarlo`) in an annealed stochastic flow."""

    def __init__(self, base: LogDensity, target: LogDensity, beta: float):
        super().__init__()
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        self.base, self.target, self.beta = base, target, float(beta)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if self.beta == 1:
            return self.target.log_prob(z)
        if self.beta == 0:
            return self.base.log_prob(z)
        return (1 - self.beta) * self.base.log_prob(z) + self.beta * self.target.log_prob(z)


TARGETS: dict[str, type[Target]] = {
    "two-modes": TwoModes,
    "two-moons": TwoMoons,
    "circular-gmm": CircularGaussianMixture,
    "ring-mixture": RingMixture,
    "sinusoidal": Sinusoidal,
    "smiley": Smiley,
    "u1": EnergyU1,
    "u2": EnergyU2,
    "u3": EnergyU3,
    "u4": EnergyU4,
    "gmm-40": GaussianMixture40,
}
"""The 2-D targets by the names the command line uses; constructor keywords are their parameters."""

HIGH_DIMENSIONAL_TARGETS: dict[str, type[Target]] = {"many-well": ManyWell}
"""Targets beyond 2-D (for ``flowforge mcmc`` and the sampling benchmarks); shown by their first pair."""
