"""normflows' ``nf.sampling``: Hamiltonian annealed importance sampling (:mod:`.hais`)."""

from . import hais
from .hais import HAIS

__all__ = ["HAIS", "hais"]
