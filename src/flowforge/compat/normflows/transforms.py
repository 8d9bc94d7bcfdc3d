"""normflows' ``nf.transforms`` path: its ``Logit``, the last layer of image models on ``[0, 1]``."""

from __future__ import annotations

from ...flows.bounded import Sigmoid


class Logit(Sigmoid):
    r"""normflows' ``transforms.Logit(alpha=0.05)``: flowforge's :class:`~flowforge.flows.Sigmoid` with
    the squeeze ``α``: ``forward`` maps the real line onto ``(−α, 1 − α)/(1 − 2α)`` ⊃ ``[0, 1]``,
    ``x = (σ(z) − α)/(1 − 2α)``, and ``inverse`` is RealNVP's logit preprocessing
    ``z = logit(α + (1 − 2α) x)``. Only the default ``α`` differs from the native class."""

    def __init__(self, alpha: float = 0.05):
        super().__init__(alpha)


__all__ = ["Logit"]
