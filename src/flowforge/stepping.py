"""Temporary: the old home of the training steps, re-exporting :mod:`flowforge.training.accelerate`
until the last importers move (then this file goes)."""

from .training.accelerate import (
    ADAM_BETAS,
    ADAM_EPS,
    RECOMPILE_LIMIT,
    EagerStep,
    FusedAdamStep,
    Objective,
    probe_cpu_vector_isa,
)

__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "RECOMPILE_LIMIT",
    "EagerStep",
    "FusedAdamStep",
    "Objective",
    "probe_cpu_vector_isa",
]
