"""Argument checks shared across the library, with one wording for each mistake."""

from __future__ import annotations


def positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int ≥ 1 (bools excluded), else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
