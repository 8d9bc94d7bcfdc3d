"""Small helpers used across the library: argument checks (:mod:`.checks`) and deprecation paths
(:mod:`.deprecation`).

normflows' ``nf.utils.optim.update_lipschitz`` lives in ``flowforge.compat.normflows.utils``; reached
from here it still works, with a DeprecationWarning. flowforge's own is
:func:`flowforge.nets.update_lipschitz`.
"""

from .deprecation import normflows_bridge

_normflows_names, __getattr__ = normflows_bridge(__name__)

__all__: list[str] = []
