"""flowforge: normalizing flows for PyTorch.

``import flowforge as nf`` gives the models (``nf.NormalizingFlow``, ``nf.MultiscaleFlow``,
``nf.FlowVAE``), the layers under ``nf.flows``, the base and target densities under
``nf.distributions``, one-line models (``nf.PlanarFlow``, ``nf.RealNVP``, ``nf.MAF``, ``nf.NSF``,
``nf.Glow``, ...), the objectives in ``nf.losses`` (and FAB in ``nf.fab``), the fitting loops in ``nf.training`` and the
numbers in ``nf.metrics``; ``nf.streaming`` reads tables larger than memory a batch at a time;
``nf.export`` writes a model's density or sampler as a ``torch.export`` program or an ONNX file, and
``flowforge.sbi`` (the ``sbi`` extra, imported on its own) gives sbi its estimators. The architecture
is described in ``docs/design.md``.
"""

from . import (  # noqa: I001  (normflows module paths; moving to flowforge.compat)
    datasets,
    distributions,
    export,
    fab,
    flows,
    importance,
    losses,
    mcmc,
    metrics,
    model,
    nets,
    presets,
    streaming,
    training,
    utils,
    vae,
)
from .model import MultiscaleFlow, NormalizingFlow
from .presets import IAF, MAF, NSF, VAE, Glow, NSFAutoregressive, PlanarFlow, RadialFlow, RealNVP, ResidualFlow
from .vae import FlowVAE
from .version import __version__


__all__ = [
    "FlowVAE",
    "Glow",
    "IAF",
    "MAF",
    "MultiscaleFlow",
    "NSF",
    "NSFAutoregressive",
    "NormalizingFlow",
    "PlanarFlow",
    "RadialFlow",
    "RealNVP",
    "ResidualFlow",
    "VAE",
    "__version__",
    "datasets",
    "distributions",
    "export",
    "fab",
    "flows",
    "importance",
    "losses",
    "mcmc",
    "metrics",
    "model",
    "nets",
    "presets",
    "streaming",
    "training",
    "utils",
    "vae",
]

from . import compat  # noqa: E402  (last: it maps normflows' names onto everything above)
from .utils.deprecation import normflows_bridge  # noqa: E402

_normflows_names, __getattr__ = normflows_bridge(__name__)
compat.normflows.install_bridge(top_level=True)
