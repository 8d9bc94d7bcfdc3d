"""normflows' ``state_dict`` layout on compat classes.

A compat class whose native parameters are named or shaped differently from normflows' registers two
converters with :func:`normflows_state`: ``save`` turns the module's own entries (keys relative to the
module, e.g. ``"parameters_uwb"``) into normflows' (``"u"``, ``"w"``, ``"b"``), and ``load`` does the
reverse. ``state_dict()`` then writes normflows' keys, and ``load_state_dict`` accepts them, so a
checkpoint moves between normflows and ``flowforge.compat.normflows`` both ways; a state dict in the
native layout still loads (``load`` only sees the entries it knows). Only the module's own entries
pass through the converters; its submodules' keys are left to the submodules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

Entries = dict[str, torch.Tensor]
Converter = Callable[[Entries], Entries]


def _own(state: Mapping[str, Any], prefix: str) -> list[str]:
    """The keys of ``state`` under ``prefix`` that belong to the module itself, not to a submodule."""
    return [key for key in state if key.startswith(prefix) and "." not in key[len(prefix) :]]


def normflows_state(module: nn.Module, save: Converter, load: Converter) -> None:
    """Make ``module.state_dict()`` use normflows' layout (``save``) and ``load_state_dict`` accept it
    (``load``). Both converters map the module's own entries, keyed relative to the module, to new
    entries; they must not change values in place."""

    def on_save(owner: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        keys = _own(state, prefix)
        native = {key[len(prefix) :]: state.pop(key) for key in keys}
        for key, value in save(native).items():
            state[prefix + key] = value

    def on_load(state: dict[str, Any], prefix: str, *args: Any) -> None:
        keys = _own(state, prefix)
        given = {key[len(prefix) :]: state[key] for key in keys}
        native_names = {name for name, _ in module.named_parameters(recurse=False)}
        native_names |= {name for name, _ in module.named_buffers(recurse=False)}
        if not given or set(given) <= native_names:
            return  # already the native layout (or nothing of this module)
        for key in keys:
            del state[key]
        for key, value in load(given).items():
            state[prefix + key] = value

    module._register_state_dict_hook(on_save)
    module._register_load_state_dict_pre_hook(on_load)


def renamed(pairs: Mapping[str, str]) -> tuple[Converter, Converter]:
    """``(save, load)`` converters for a plain renaming ``{native: normflows}`` of same-shaped entries."""
    back = {new: old for old, new in pairs.items()}

    def save(entries: Entries) -> Entries:
        return {pairs.get(key, key): value for key, value in entries.items()}

    def load(entries: Entries) -> Entries:
        return {back.get(key, key): value for key, value in entries.items()}

    return save, load
