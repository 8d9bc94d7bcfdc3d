"""Other libraries' APIs mapped onto flowforge's native classes.

``from flowforge.compat import normflows as nf`` gives normflows' names, argument orders, module
paths and mask conventions (:mod:`flowforge.compat.normflows`). Nothing native imports this package.
"""

from . import normflows

__all__ = ["normflows"]
