"""normflows' ``nf.utils`` path."""

from . import optim
from .optim import clear_grad, set_requires_grad, update_lipschitz

__all__ = ["clear_grad", "optim", "set_requires_grad", "update_lipschitz"]
