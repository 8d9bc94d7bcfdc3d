"""flowforge: normalizing flows for PyTorch.

``import flowforge as nf`` gives ``nf.NormalizingFlow``, the layers under ``nf.flows``
and the base and target densities under ``nf.distributions``.
"""

from . import distributions, flows, metrics
from .core import NormalizingFlow

__version__ = "0.1.0"

__all__ = ["NormalizingFlow", "distributions", "flows", "metrics", "__version__"]
