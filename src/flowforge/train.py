"""Temporary: the old home of the training loops, re-exporting :mod:`flowforge.training` and the
evaluators of :mod:`flowforge.metrics` until the last importers move (then this file goes)."""

from .losses import annealing_beta
from .metrics import elbo_per_row, log_likelihood_per_row, mean_elbo, mean_log_likelihood, mean_nll, nll_per_row
from .training import (
    COMPILE_MODES,
    SCHEDULES,
    DataFitResult,
    Every,
    FitResult,
    TrainingDiverged,
    VAEFitResult,
    default_device,
    fit,
    fit_data,
    fit_vae,
)

__all__ = [
    "COMPILE_MODES",
    "SCHEDULES",
    "DataFitResult",
    "Every",
    "FitResult",
    "TrainingDiverged",
    "VAEFitResult",
    "annealing_beta",
    "default_device",
    "elbo_per_row",
    "fit",
    "fit_data",
    "fit_vae",
    "log_likelihood_per_row",
    "mean_elbo",
    "mean_log_likelihood",
    "mean_nll",
    "nll_per_row",
]
