"""normflows' ``nf.utils.optim`` path; flowforge's own is :func:`flowforge.nets.update_lipschitz`."""

from ....nets import update_lipschitz

__all__ = ["update_lipschitz"]
