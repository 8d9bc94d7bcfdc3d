"""Deprecation paths: normflows' names reached through native modules, and retired keyword arguments.

Native modules keep one meaning per name. A name that only normflows uses is defined in
``flowforge.compat.normflows``. Scripts that still reach it through a native module
(``nf.flows.CoupledRationalQuadraticSpline`` after ``import flowforge as nf``) get it from that
module's ``__getattr__``, made by :func:`normflows_bridge`, with a :class:`DeprecationWarning`
naming the compat import. The compat package fills each native module's ``_normflows_names`` when
it is imported; no native module imports compat.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

COMPAT_IMPORT = "from flowforge.compat import normflows as nf"


def normflows_bridge(
    module: str, retired: Mapping[str, tuple[Any, str]] | None = None
) -> tuple[dict[str, Any], Callable[[str], Any]]:
    """A module's ``(_normflows_names, __getattr__)`` pair: ``__getattr__`` returns a name of the dict
    (filled by the compat package) with a DeprecationWarning, and raises AttributeError for any other.

    ``module`` is the native module's ``__name__``; ``flowforge.flows`` serves what normflows calls
    ``nf.flows.<name>``. ``retired`` maps flowforge's own former names to ``(object, advice)``:
    they are served with a DeprecationWarning that gives the advice.
    """
    names: dict[str, Any] = {}
    retired = dict(retired or {})
    path = module.removeprefix("flowforge").lstrip(".")
    prefix = f"nf.{path}." if path else "nf."

    def __getattr__(name: str) -> Any:
        if name in names:
            message = (
                f"{module}.{name} is normflows' name, kept apart from flowforge's own API: "
                f"use `{COMPAT_IMPORT}` and {prefix}{name}"
            )
            value = names[name]
        elif name in retired:
            value, advice = retired[name]
            message = f"{module}.{name} is retired: {advice}"
        else:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return value

    return names, __getattr__


def retired_keywords(owner: str, given: Mapping[str, Any], retired: Mapping[str, str]) -> None:
    """Warn (DeprecationWarning) for each keyword of ``given`` that ``retired`` names, with its advice;
    raise TypeError, as Python would, for any other. ``owner`` is the class's path below the package,
    e.g. ``"flows.Residual"``.

    For constructors that dropped normflows' leftover arguments but still accept them, for one
    release, from scripts that pass them by keyword.
    """
    for name in given:
        if name not in retired:
            raise TypeError(f"{owner.rsplit('.', 1)[-1]}() got an unexpected keyword argument {name!r}")
        warnings.warn(
            f"{owner}({name}=...) is deprecated: {retired[name]}; "
            f"normflows' signature is nf.{owner} after `{COMPAT_IMPORT}`",
            DeprecationWarning,
            stacklevel=3,
        )
