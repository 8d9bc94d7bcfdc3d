"""Data-side transforms under normflows' module path (``nf.transforms.Logit``)."""

from __future__ import annotations

from .flows import base, bounded


class Logit(base.Reverse):
    r"""The sigmoid direction of :class:`flowforge.flows.Logit` as a flow, as normflows'
    ``transforms.Logit``: ``forward`` maps the real line onto ``(0, 1)``,
    ``x = (σ(z) − α)/(1 − 2α)``, the last sampling-direction layer of an image model on ``[0, 1]``;
    ``inverse`` is RealNVP's logit preprocessing. Both directions cheap.
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__(bounded.Logit(alpha))
