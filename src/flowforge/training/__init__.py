"""Training loops: :func:`fit` runs a number of steps of one loss (reverse KL to a density, forward KL
to samples, the α-divergence, or a loss object of :mod:`flowforge.losses`); :func:`fit_data` (a flow,
maximum likelihood) and :func:`fit_vae` (a VAE, the ELBO) train by epochs until the validation score
stops improving, with one epoch loop.

``loop`` holds the step loop, ``epochs`` the epoch loop, ``common`` the results and the divergence
and interruption errors, ``checkpoint`` the training states a loop writes (``checkpoint=``) and
resumes from (``resume=``), ``interrupt`` the handling of SIGINT, SIGTERM and SIGHUP, and
``accelerate`` the compiled and fused steps with everything that touches a private torch API (each
with a fallback to the eager step); the ``"auto"`` compile policy's constants live there.
``distributed`` lets :func:`fit_data` train one model in several processes under ``torchrun``.
"""

from ..losses import annealing_beta
from . import distributed
from .accelerate import COMPILE_MODES
from .checkpoint import ResumeError
from .common import (
    DataFitResult,
    Every,
    FitResult,
    TrainingDiverged,
    TrainingInterrupted,
    VAEFitResult,
    default_device,
)
from .epochs import SCHEDULES, fit_data, fit_vae
from .loop import STEP_LOSSES, fit

__all__ = [
    "COMPILE_MODES",
    "DataFitResult",
    "Every",
    "FitResult",
    "SCHEDULES",
    "ResumeError",
    "STEP_LOSSES",
    "TrainingDiverged",
    "TrainingInterrupted",
    "VAEFitResult",
    "annealing_beta",
    "default_device",
    "distributed",
    "fit",
    "fit_data",
    "fit_vae",
]
