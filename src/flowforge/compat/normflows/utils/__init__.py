"""normflows' ``nf.utils`` path: :mod:`.optim` (``update_lipschitz``)."""

from . import optim
from .optim import update_lipschitz

__all__ = ["optim", "update_lipschitz"]
