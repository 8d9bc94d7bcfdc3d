"""Importance-sampling arithmetic on log-weights ``log w = log p̃(x) − log q(x)``, shared by the
losses, the MCMC/AIS code and the metrics. Pure tensor functions: no models, no flows.
"""

from __future__ import annotations

import math

import torch


def log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    """``log mean exp(values)`` along dimension 0, computed stably."""
    return torch.logsumexp(values, 0) - math.log(values.shape[0])


def check_log_weights(log_weights: torch.Tensor) -> None:
    """Raise ValueError unless ``log_weights`` is a 1-D tensor of at least 2 values, none NaN or +inf."""
    if log_weights.dim() != 1 or log_weights.shape[0] < 2:
        raise ValueError(f"expected a 1-D tensor of at least 2 log-weights, got shape {tuple(log_weights.shape)}")
    if torch.isnan(log_weights).any() or (log_weights == torch.inf).any():
        raise ValueError("log-weights contain NaN or +inf: the flow or the target produced invalid values")


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """Normalised ESS ``(Σw)² / (n Σw²)`` in ``(0, 1]`` from log importance weights (computed in float64)."""
    check_log_weights(log_weights)
    log_weights = log_weights.double()
    n = log_weights.shape[0]
    return torch.exp(2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0) - math.log(n))


def log_normalizer(log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-sampling estimate of ``log Z = log E_q[p̃/q]`` and its delta-method standard error."""
    check_log_weights(log_weights)
    log_weights = log_weights.double()
    n = log_weights.shape[0]
    estimate = torch.logsumexp(log_weights, 0) - math.log(n)
    ess = effective_sample_size(log_weights)
    return estimate, torch.sqrt((1 / ess - 1).clamp_min(0) / n)
