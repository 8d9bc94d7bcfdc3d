"""Fill the native modules' ``_normflows_names`` with the compat names they lack.

A native module (``flowforge.flows``) serves what normflows has at the matching path
(``nf.flows``) and flowforge does not define there, with a DeprecationWarning
(:func:`flowforge.utils.deprecation.normflows_bridge`). Native names always win: the bridge is
consulted only for names the native module does not have.
"""

from __future__ import annotations

import sys
from types import ModuleType

from ... import distributions as native_distributions
from ... import flows as native_flows
from ... import nets as native_nets
from ... import utils as native_utils


def _missing_names(compat: ModuleType, native: ModuleType) -> dict[str, object]:
    public = getattr(compat, "__all__", [name for name in vars(compat) if not name.startswith("_")])
    return {name: getattr(compat, name) for name in public if name not in vars(native)}


def install_bridge(top_level: bool = False) -> None:
    """Register normflows' names with the native modules that normflows' paths point to:
    ``flowforge.flows``, ``.distributions``, ``.nets`` and ``.utils``; with ``top_level``, also the
    package itself when it has a ``_normflows_names`` dict (for ``nf.transforms``,
    ``nf.ConditionalNormalizingFlow`` and the like).

    Idempotent. The compat package calls it without ``top_level`` when it is imported; the
    top-level ``flowforge/__init__.py`` calls it with ``top_level=True`` as its last line, once its
    own names are all set (before then, its submodules would look missing and be bridged)."""
    compat = sys.modules[__package__]  # the compat package, already being imported when this runs

    pairs = [
        (compat.flows, native_flows),
        (compat.distributions, native_distributions),
        (compat.nets, native_nets),
        (compat.utils, native_utils),
    ]
    top = sys.modules["flowforge"]
    if top_level and isinstance(getattr(top, "_normflows_names", None), dict):
        pairs.append((compat, top))
    for compat_module, native_module in pairs:
        native_module._normflows_names.update(_missing_names(compat_module, native_module))
