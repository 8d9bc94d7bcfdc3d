"""Transitional (issue 14): normflows' ``nf.transforms`` path now lives in
:mod:`flowforge.compat.normflows.transforms`. This module stays only while ``flowforge/__init__.py``
and ``presets.py`` still import it; flowforge's own layer is :class:`flowforge.flows.Sigmoid`
(``Sigmoid(alpha)`` is normflows' ``transforms.Logit(alpha)``)."""

from .compat.normflows.transforms import Logit

__all__ = ["Logit"]
