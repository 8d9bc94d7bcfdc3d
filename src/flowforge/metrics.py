"""Numbers that say how good a model is: importance-sampling diagnostics, exact 2-D KL, bits/dim,
the per-row NLL of a flow on data (continuous or dequantised levels) and a VAE's ELBO and
importance-sampled log-likelihood.

All functions run without gradients and on the model's device; per-row values come back as float64
on the CPU. The training loops (:mod:`flowforge.training`) validate with these functions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np
import torch

from .datasets import dequantize
from .importance import check_log_weights, effective_sample_size, log_normalizer
from .losses import require_target, target_log_prob
from .model import MultiscaleFlow, NormalizingFlow
from .streaming import LazyRows, Rows, as_rows, chunks, mean_and_standard_error, moments
from .utils.checks import positive_int
from .vae import FlowVAE

Bounds = tuple[tuple[float, float], tuple[float, float]]
FlowModel = NormalizingFlow | MultiscaleFlow
"""A flow model of :mod:`flowforge.model`: what the NLL functions (and the training loops) take."""

__all__ = [
    "Bounds",
    "FlowModel",
    "bits_per_dim",
    "check_log_weights",
    "discrete_nll_offset",
    "effective_sample_size",
    "elbo_per_row",
    "evaluate_in_chunks",
    "gaussian_nll",
    "grid_kl",
    "grid_kl_problems",
    "grid_points",
    "importance_problems",
    "importance_log_weights",
    "log_likelihood_per_row",
    "log_normalizer",
    "mean_elbo",
    "mean_log_likelihood",
    "mean_nll",
    "nll_per_row",
    "summary",
]


@torch.no_grad()
def importance_log_weights(model: NormalizingFlow, num_samples: int = 100_000, chunk: int = 2**16) -> torch.Tensor:
    """``log p̃(x) − log q(x)`` for ``num_samples`` draws ``x ~ q`` (needs ``model.p``)."""
    return _importance_draws(model, num_samples, chunk)[0]


def _importance_draws(
    model: NormalizingFlow, num_samples: int, chunk: int = 2**16, box: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """The log-weights of :func:`importance_log_weights`, and how many of the draws lie outside ``box``
    (rows ``(low, high)``, one per coordinate; 0 without a box)."""
    target = require_target(model)
    parts, outside = [], 0
    for start in range(0, num_samples, chunk):
        x, log_q = model.sample(min(chunk, num_samples - start))
        parts.append(target_log_prob(target, x, None) - log_q)
        if box is not None:
            low, high = box.to(x)[:, 0], box.to(x)[:, 1]
            outside += int((~((x >= low) & (x <= high)).all(1)).sum())
    return torch.cat(parts), outside


def grid_points(bounds: Bounds, size: int, like: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Centres of a ``size × size`` grid of cells covering ``bounds`` (x-major), and the cell area."""
    (x0, x1), (y0, y1) = bounds
    dx, dy = (x1 - x0) / size, (y1 - y0) / size
    xs = torch.linspace(x0 + dx / 2, x1 - dx / 2, size, dtype=like.dtype, device=like.device)
    ys = torch.linspace(y0 + dy / 2, y1 - dy / 2, size, dtype=like.dtype, device=like.device)
    xx, yy = torch.meshgrid(xs, ys, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), dx * dy


@torch.no_grad()
def evaluate_in_chunks(function: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor, chunk: int = 2**15):
    return torch.cat([function(points[i : i + chunk]) for i in range(0, points.shape[0], chunk)])


def _grid_kl(model: NormalizingFlow, target, bounds: Bounds, size: int, like: torch.Tensor) -> dict[str, float]:
    points, area = grid_points(bounds, size, like)
    log_q = evaluate_in_chunks(model.log_prob, points)
    log_p_tilde = evaluate_in_chunks(target.log_prob, points)
    log_z = torch.logsumexp(log_p_tilde, 0) + math.log(area)
    q = torch.exp(log_q)
    integrand = torch.where(q > 0, q * (log_q - (log_p_tilde - log_z)), 0.0)
    return {"kl": float(integrand.sum() * area), "q_mass": float(q.sum() * area), "log_z": float(log_z)}


@torch.no_grad()
def grid_kl(model: NormalizingFlow, bounds: Bounds | None = None, grid_size: int = 400) -> dict[str, float]:
    """KL(q‖p) for a 2-D model and target, by the midpoint rule on a grid.

    The target is normalised on the same grid (``log Z`` by the same rule). The error
    of the rule is estimated by Richardson extrapolation, ``|KL_n − KL_{n/2}| / 3`` for
    a rule of order h², and the mass of ``q`` outside the box is reported, since the
    box integral misses it. Returns ``kl``, ``kl_grid_error``, ``q_mass_outside``,
    ``log_z_grid``, ``grid_size``.
    """
    target = require_target(model)
    if bounds is None:
        (x0, x1), (y0, y1) = cast(torch.Tensor, target.bounds).tolist()
        bounds = ((float(x0), float(x1)), (float(y0), float(y1)))
    if grid_size < 4 or grid_size % 2:
        raise ValueError(f"grid_size must be an even int >= 4, got {grid_size}")
    like = next(itertools.chain(model.parameters(), model.buffers()))  # a model may have only buffers
    fine = _grid_kl(model, target, bounds, grid_size, like)
    coarse = _grid_kl(model, target, bounds, grid_size // 2, like)
    return {
        "kl": fine["kl"],
        "kl_grid_error": abs(fine["kl"] - coarse["kl"]) / 3,
        "q_mass_outside": 1.0 - fine["q_mass"],
        "log_z_grid": fine["log_z"],
        "grid_size": grid_size,
    }


MASS_OUTSIDE_LIMIT = 0.01
"""The grid KL is not valid when more than this share of the flow's mass lies outside the box (or the
grid counts this much more than all of it, which means the grid does not resolve the flow)."""
GRID_ERROR_LIMIT = (0.25, 0.01)
"""``(relative, absolute)``: the grid KL is not valid when its Richardson error estimate exceeds both
this share of the KL and this many nats."""
MIN_EFFECTIVE_SAMPLES = 10.0
"""The log Z estimate is not valid when the importance weights rest on fewer effective samples
(``ESS × num_samples``): its standard error then says nothing."""


def grid_kl_problems(grid: Mapping[str, float], samples_outside: float | None = None) -> list[str]:
    """Why the grid KL of :func:`grid_kl` is not a valid estimate, by its own diagnostics (empty when it
    is): a value or error that is not finite; a mass of the flow on the grid further from 1 than
    :data:`MASS_OUTSIDE_LIMIT`, because the flow lies outside the box (which the box integral misses) or
    the grid does not resolve it (``samples_outside``, the share of flow samples outside the box, tells
    the two apart); or a grid error above :data:`GRID_ERROR_LIMIT`."""
    kl, error, outside = grid["kl"], grid["kl_grid_error"], grid["q_mass_outside"]
    if not (math.isfinite(kl) and math.isfinite(error) and math.isfinite(outside)):
        return ["the flow's or the target's log-density is not finite on the grid"]
    problems = []
    if samples_outside is not None and samples_outside > MASS_OUTSIDE_LIMIT:
        problems.append(f"{samples_outside:.0%} of the flow's samples lie outside the target's box")
    elif abs(outside) > MASS_OUTSIDE_LIMIT:
        unresolved = samples_outside is not None or outside < 0  # more than all of the mass: too coarse a grid
        cause = "the grid does not resolve the flow" if unresolved else (
            "the flow lies outside the target's box or the grid does not resolve it"
        )  # fmt: skip
        problems.append(f"the grid holds {1 - outside:.3g} of the flow's mass, not 1: {cause}")
    relative, absolute = GRID_ERROR_LIMIT
    if error > relative * abs(kl) and error > absolute:
        problems.append(f"the grid error {error:.2g} is large beside the value {kl:.4g}; use a finer grid")
    return problems


def importance_problems(log_weights: torch.Tensor) -> list[str]:
    """Why the ESS and log Z estimates from ``log_weights`` are not valid (empty when they are):
    log-weights that are NaN or +inf, none above −inf, or fewer than :data:`MIN_EFFECTIVE_SAMPLES`
    effective samples."""
    count = log_weights.shape[0]
    invalid = int((torch.isnan(log_weights) | (log_weights == torch.inf)).sum())
    if invalid:
        return [f"{invalid} of {count} log-weights are NaN or +inf (the flow's or the target's log-density)"]
    if not bool(torch.isfinite(log_weights).any()):
        return [f"the target's density is zero at all {count} flow samples"]
    effective = float(effective_sample_size(log_weights)) * count
    if effective < MIN_EFFECTIVE_SAMPLES:
        return [f"the importance weights rest on {effective:.1f} effective samples of {count}"]
    return []


@torch.no_grad()
def summary(model: NormalizingFlow, num_samples: int = 100_000, grid_size: int | None = 400) -> dict[str, Any]:
    """ESS, log Z estimate (with standard error) and, for 2-D targets, the grid KL, a
    Monte-Carlo KL(q‖p) that uses the grid's ``log Z`` (a cross-check that sees all of q) and
    ``q_samples_outside``, the share of the flow's samples outside the target's box.

    Each estimate comes with its validity by its own diagnostics: ``log_z_valid``
    (:func:`importance_problems`; the ESS and log Z are NaN when the log-weights are), ``kl_valid``
    (:func:`grid_kl_problems`) and ``warnings``, the reasons, one string each, prefixed by the
    estimate they concern.
    """
    target = model.p
    with_grid = bool(grid_size) and getattr(target, "n_dims", None) == 2 and hasattr(target, "bounds")
    box = cast(torch.Tensor, target.bounds) if with_grid else None  # type: ignore[union-attr]
    log_w, outside = _importance_draws(model, num_samples, box=box)
    problems = importance_problems(log_w)
    ess = log_z = log_z_se = math.nan
    usable = bool(torch.isfinite(log_w).any()) and not bool((torch.isnan(log_w) | (log_w == torch.inf)).any())
    if usable:  # fewer effective samples than MIN_EFFECTIVE_SAMPLES still give numbers, flagged not valid
        ess = float(effective_sample_size(log_w))
        log_z, log_z_se = (float(value) for value in log_normalizer(log_w))
    result: dict[str, Any] = {
        "ess": ess,
        "log_z_estimate": log_z,
        "log_z_standard_error": log_z_se,
        "num_samples": num_samples,
        "log_z_valid": not problems,
        "warnings": [f"log Z: {problem}" for problem in problems],
    }
    if with_grid:
        grid = grid_kl(model, grid_size=cast(int, grid_size))
        result.update(grid)
        result["kl_monte_carlo"] = float(grid["log_z_grid"] - log_w.mean())
        result["kl_monte_carlo_standard_error"] = float(log_w.std() / math.sqrt(log_w.shape[0]))
        result["q_samples_outside"] = outside / num_samples
        kl_problems = grid_kl_problems(grid, outside / num_samples)
        result["kl_valid"] = not kl_problems
        result["warnings"] += [f"KL on grid: {problem}" for problem in kl_problems]
    return result


def bits_per_dim(nll: float, dim: int) -> float:
    """A negative log-likelihood in nats per sample as bits per dimension: ``nll / (dim · ln 2)``."""
    return nll / (positive_int("dim", dim) * math.log(2))


def gaussian_nll(train: Rows | np.ndarray, test: Rows | np.ndarray) -> tuple[float, float]:
    """The baseline every density model should beat: a full-covariance Gaussian fitted to ``train``
    by maximum likelihood; returns its mean test NLL (nats per row) and that mean's standard error.
    Computed in float64; a singular covariance (constant or collinear columns) is an error. Either set
    may be a :class:`~flowforge.streaming.LazyRows` or a 2-D NumPy array (a memory map), read in one
    streaming pass (:func:`~flowforge.streaming.moments`)."""
    train, test = as_rows(train, "train"), as_rows(test, "test")
    if len(train.shape) != 2 or len(test.shape) != 2 or train.shape[1] != test.shape[1] or train.shape[0] < 2:
        raise ValueError(
            f"need (rows, columns) train and test with equal columns, got {tuple(train.shape)}, {tuple(test.shape)}"
        )
    if isinstance(train, LazyRows):
        mean, covariance = moments(train)
    else:
        train = train.double()
        mean, covariance = train.mean(0), torch.atleast_2d(torch.cov(train.T, correction=0))
    cholesky, info = torch.linalg.cholesky_ex(covariance)
    if info:
        raise ValueError("the training data's covariance is singular (constant or collinear columns)")
    gaussian = torch.distributions.MultivariateNormal(mean, scale_tril=cholesky)
    return mean_and_standard_error(-gaussian.log_prob(rows.to(mean)) for rows in chunks(test))


def discrete_nll_offset(data: Rows, levels: int | None) -> float:
    """``D log levels`` for rows of ``D`` values: turns the density of data dequantised and scaled to
    ``[0, 1)`` into the likelihood bound of the discrete data (Theis et al. 2016,
    https://arxiv.org/abs/1511.01844); 0 without ``levels``."""
    return 0.0 if levels is None else math.prod(data.shape[1:]) * math.log(levels)


@torch.no_grad()
def nll_per_row(
    model: FlowModel,
    data: Rows | np.ndarray,
    batch_size: int = 4096,
    context: Rows | np.ndarray | None = None,
    levels: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``−log q(x)`` (or ``−log q(x | c)`` with a per-row ``context``) for every row of ``data``, in
    chunks on the model's device; float64 on the CPU. ``data`` and ``context`` may be
    :class:`~flowforge.streaming.LazyRows` or 2-D NumPy arrays (memory maps), read ``batch_size`` rows
    at a time.

    With ``levels``, ``data`` holds integer levels ``0 … levels−1`` and each value is the discrete
    NLL bound of uniform dequantisation, ``−log q((k + u)/levels) + D log levels``, with one seeded
    draw of ``u ~ U[0, 1)^D`` per row (drawn per chunk for rows read on demand).
    """
    data = as_rows(data, "data")
    context = None if context is None else as_rows(context, "context")
    like = next(iter(model.parameters()), None)
    offset = discrete_nll_offset(data, levels)
    if isinstance(data, LazyRows) or isinstance(context, LazyRows):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        values = []
        for index in torch.arange(len(data)).split(batch_size):
            rows = _on(data, index, like)
            if levels is not None:
                rows = dequantize(rows, levels, generator)
            log_q = model.log_prob(rows) if context is None else model.log_prob(rows, _on(context, index, like))
            values.append(-log_q.double().cpu())
        return torch.cat(values) + offset
    device, dtype = (data.device, data.dtype) if like is None else (like.device, like.dtype)
    data = data.to(device=device, dtype=dtype)
    if context is not None:
        context = context.to(device=device, dtype=dtype if context.is_floating_point() else context.dtype)
    if levels is not None:
        data = dequantize(data, levels, torch.Generator(device="cpu").manual_seed(seed))
    values = []
    for index in torch.arange(data.shape[0], device=data.device).split(batch_size):
        rows = data[index]
        log_q = model.log_prob(rows) if context is None else model.log_prob(rows, context[index])
        values.append(-log_q.double().cpu())
    return torch.cat(values) + offset


def _on(data: Rows, index: torch.Tensor, like: torch.Tensor | None) -> torch.Tensor:
    """The rows ``index`` of ``data`` on ``like``'s device, floating ones in its dtype."""
    rows = data.take(index) if isinstance(data, LazyRows) else data[index.to(data.device)]
    if like is None:
        return rows
    return rows.to(device=like.device, dtype=like.dtype if rows.is_floating_point() else rows.dtype)


def mean_nll(
    model: FlowModel,
    data: Rows | np.ndarray,
    batch_size: int = 4096,
    context: Rows | np.ndarray | None = None,
    levels: int | None = None,
    seed: int = 0,
) -> float:
    """The mean of :func:`nll_per_row`: nats per row (per image)."""
    return float(nll_per_row(model, data, batch_size, context, levels, seed).mean())


def _rows_in_chunks(
    model: FlowVAE, data: torch.Tensor, batch_size: int, per_row: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``per_row(rows)`` over ``data`` in chunks on the model's device, as float64 on the CPU."""
    like = next(iter(model.parameters()))
    data = data.to(device=like.device, dtype=like.dtype)
    with torch.no_grad():
        return torch.cat([per_row(rows).double().cpu() for rows in data.split(batch_size)])


def elbo_per_row(model: FlowVAE, data: torch.Tensor, num_samples: int = 10, batch_size: int = 1024) -> torch.Tensor:
    """The ELBO of every row of ``data``, each with ``num_samples`` posterior samples."""
    return _rows_in_chunks(model, data, batch_size, lambda rows: model.elbo(rows, num_samples))


def log_likelihood_per_row(
    model: FlowVAE, data: torch.Tensor, num_samples: int = 1000, batch_size: int = 256
) -> torch.Tensor:
    """The importance-sampled ``log p(x)`` (:meth:`FlowVAE.log_likelihood`) of every row of ``data``."""
    return _rows_in_chunks(model, data, batch_size, lambda rows: model.log_likelihood(rows, num_samples))


def mean_elbo(model: FlowVAE, data: torch.Tensor, num_samples: int = 10, batch_size: int = 1024) -> float:
    """The ELBO averaged over the rows of ``data`` (each with ``num_samples`` posterior samples)."""
    return float(elbo_per_row(model, data, num_samples, batch_size).mean())


def mean_log_likelihood(
    model: FlowVAE, data: torch.Tensor, num_samples: int = 1000, batch_size: int = 256
) -> tuple[float, float]:
    """The importance-sampled ``log p(x)`` averaged over the rows of ``data``, and its standard error
    over the rows."""
    values = log_likelihood_per_row(model, data, num_samples, batch_size)
    standard_error = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), standard_error
