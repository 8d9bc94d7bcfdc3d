"""The models a run's config describes, built the same way when a run is fitted and when it is loaded.

A target fit (``kind`` ``"target"``) is a preset of :data:`~flowforge.presets.PRESETS` on the target's
dimension with the base that ``--base`` names; a data fit (``"table"`` or ``"images"``) is a
tabular preset of :data:`TABLE_FLOWS` followed by a :class:`~flowforge.flows.Whitening` layer, or a
multi-scale Glow for images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..distributions.base import GaussianMixture, ResampledGaussian, TemperedGaussian
from ..distributions.targets import TARGETS
from ..flows import Whitening
from ..nets import MLP
from ..presets import MAF, NSF, PRESETS, Glow, NSFAutoregressive, RealNVP
from .errors import CLIError

BASES = ("gaussian", "resampled", "tempered", "mixture")
"""``--base`` for target fits: the preset's trainable diagonal Gaussian, a resampled Gaussian (learned
acceptance, an MLP 2x64, T = 100), a Gaussian with a learned temperature, or a trainable mixture of 8
diagonal Gaussians."""
TABLE_FLOWS: dict[str, Callable[..., Any]] = {"realnvp": RealNVP, "maf": MAF, "nsf": NSF, "nsf-ar": NSFAutoregressive}
"""Presets for tabular data: each takes ``(dim, layers, hidden=..., context_features=...)``."""


def base_distribution(name: str, dim: int):
    """The base distribution ``--base`` names; None leaves the preset's own diagonal Gaussian."""
    if name == "resampled":
        return ResampledGaussian(dim, MLP([dim, 64, 64, 1], init_zeros=True), truncation=100)
    if name == "tempered":
        return TemperedGaussian(dim)
    if name == "mixture":
        return GaussianMixture(8, dim)
    return None


def build_target_model(config: dict):
    """The flow of a target fit: ``config["flow"]`` with ``config["layers"]`` layers, fitted to the target."""
    target = TARGETS[config["target"]](**config["target_params"])
    q0 = base_distribution(config.get("base", "gaussian"), target.n_dims)  # runs written before --base have none
    return PRESETS[config["flow"]](target.n_dims, config["layers"], p=target, q0=q0)


def build_data_model(config: dict, train: torch.Tensor | None = None):
    """The model a data run's ``config`` describes. Tables: the preset followed by a
    :class:`~flowforge.flows.Whitening` layer with the mean and covariance of ``train`` (so the
    model starts as the full-covariance Gaussian of the training data and works in the data's
    units); without ``train``, placeholders that ``load_state_dict`` fills."""
    if config["kind"] == "images":
        return Glow(
            tuple(config["shape"]), config["scales"], steps=config["layers"], hidden=config["hidden"],
            num_classes=10 if config["class_cond"] else None,
        )  # fmt: skip
    dim = len(config["names"])
    context_features = len(config["context_names"]) or None
    model = TABLE_FLOWS[config["flow"]](
        dim, config["layers"], hidden=config["hidden"], context_features=context_features
    )
    dtype = torch.get_default_dtype()
    if train is None:
        model.flows.append(Whitening(torch.zeros(dim, dtype=dtype), torch.eye(dim, dtype=dtype)))
    else:
        try:
            model.flows.append(Whitening.from_data(train.to(dtype)))
        except ValueError as error:
            raise CLIError(f"the training data cannot be fitted: {error}") from None
    return model
