"""normflows' ``nf.utils``: :mod:`.eval`, :mod:`.masks`, :mod:`.nn`, :mod:`.optim`,
:mod:`.preprocessing` and :mod:`.splines`, with the names normflows exports here."""

from . import eval, masks, nn, optim, preprocessing, splines
from .eval import bitsPerDim, bitsPerDimDataset
from .nn import ActNorm, ClampExp, ConstScaleLayer, sum_except_batch, tile
from .optim import clear_grad, set_requires_grad, update_lipschitz
from .preprocessing import Jitter, Logit, Scale

__all__ = [
    "ActNorm",
    "ClampExp",
    "ConstScaleLayer",
    "Jitter",
    "Logit",
    "Scale",
    "bitsPerDim",
    "bitsPerDimDataset",
    "clear_grad",
    "eval",
    "masks",
    "nn",
    "optim",
    "preprocessing",
    "set_requires_grad",
    "splines",
    "sum_except_batch",
    "tile",
    "update_lipschitz",
]
