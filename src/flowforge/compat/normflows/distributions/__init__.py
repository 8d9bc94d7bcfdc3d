"""normflows' ``nf.distributions``: base densities (:mod:`.base`), targets (:mod:`.target`) and its 2-D
"prior" densities (:mod:`.prior`), on flowforge's: the names its three submodules export."""

from . import base, prior, target
from .base import *  # noqa: F403
from .prior import *  # noqa: F403
from .target import *  # noqa: F403

__all__ = ["base", "prior", "target", *base.__all__, *prior.__all__, *target.__all__]
