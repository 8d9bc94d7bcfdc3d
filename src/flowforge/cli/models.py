"""The models a run's config describes, built the same way when a run is fitted and when it is loaded.

A target fit (``kind`` ``"target"``) is a preset of :data:`~flowforge.presets.PRESETS` on the target's
dimension with the base that ``--base`` names; a data fit (``"table"`` or ``"images"``) is a
tabular preset of :data:`TABLE_FLOWS` followed by a :class:`~flowforge.flows.Whitening` layer, or a
multi-scale Glow for images.

``sample`` builds models from the config inside a checkpoint, which may come from anywhere, so both
builders check the config first: known names, sizes within the command's limits (depth, width,
estimated parameter count) and the types they need; anything else is a :class:`CLIError`, raised
before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..distributions.base import GaussianMixture, ResampledGaussian, TemperedGaussian
from ..distributions.targets import TARGETS
from ..flows import Whitening
from ..model import NormalizingFlow
from ..nets import MLP
from ..presets import MAF, NSF, PRESETS, Glow, NSFAutoregressive, RealNVP
from ..streaming import LazyRows, moments
from .errors import CLIError
from .validators import MAX_LAYERS, parameter_budget, target_param

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


MAX_WIDTH = 2**16
"""The widest conditioner net a config may ask for (``hidden``), before the parameter count is estimated."""
MAX_LEVELS = 8
"""The most levels of a multi-scale Glow: each halves the image's side."""
MAX_COLUMNS = 10_000
"""The most columns (data and context) of a table run."""


def _name(config: dict, key: str, known: Any) -> str:
    value = config.get(key)
    if not isinstance(value, str) or value not in known:
        raise CLIError(f"the run's config has {key}={value!r}; expected one of {', '.join(sorted(known))}")
    return value


def _size(config: dict, key: str, high: int, low: int = 1) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CLIError(f"the run's config has {key}={value!r}; expected an integer from {low} to {high}")
    return value


def _names(config: dict, key: str, least: int) -> list[str]:
    value = config.get(key)
    if (
        not isinstance(value, list)
        or not least <= len(value) <= MAX_COLUMNS
        or not all(isinstance(v, str) for v in value)
    ):
        raise CLIError(f"the run's config has no valid {key}: expected a list of {least} to {MAX_COLUMNS} column names")
    return value


def build_target_model(config: dict):
    """The flow of a target fit: ``config["flow"]`` with ``config["layers"]`` layers, fitted to the target.
    A config with unknown names, sizes beyond the limits or target parameters the target refuses is a
    :class:`CLIError`."""
    name = _name(config, "target", TARGETS)
    given = config.get("target_params")
    if not isinstance(given, dict):
        raise CLIError(f"the run's config has target_params={given!r}; expected a mapping of names to numbers")
    params: dict[str, Any] = {key: target_param(name, key, value) for key, value in given.items()}
    flow, depth = _name(config, "flow", PRESETS), _size(config, "layers", MAX_LAYERS)
    base = config.get("base", "gaussian")  # runs written before --base have none
    if base not in BASES:
        raise CLIError(f"the run's config has base={base!r}; expected one of {', '.join(BASES)}")
    try:
        target = TARGETS[name](**params)
    except (TypeError, ValueError) as error:
        raise CLIError(f"the run's config has invalid parameters for target {name!r}: {error}") from None
    return PRESETS[flow](target.n_dims, depth, p=target, q0=base_distribution(base, target.n_dims))


def check_data_config(config: dict) -> None:
    """Refuse a data run's config (:class:`CLIError`) with unknown names, sizes beyond the limits, an
    image shape the Glow cannot take, or an estimated parameter count above
    :data:`~flowforge.cli.validators.MAX_PARAMETERS`; nothing is built."""
    depth, hidden = _size(config, "layers", MAX_LAYERS), _size(config, "hidden", MAX_WIDTH)
    if config.get("kind") == "images":
        shape, levels = config.get("shape"), _size(config, "scales", MAX_LEVELS)
        _size(config, "levels", 2**16, low=2)  # grey levels of the images
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v >= 1 for v in shape)):
            raise CLIError(f"the run's config has shape={shape!r}; expected [channels, height, width]")
        channels, height, width = shape
        if channels > 4 or height % 2**levels or width % 2**levels or height * width > 2**20:
            raise CLIError(
                f"a Glow of {levels} levels needs images of at most 4 channels whose height and width are multiples "
                f"of {2**levels} (at most 2^20 pixels), got shape {shape}"
            )
        parameter_budget(depth * levels * hidden * (hidden + 16 * channels), "the Glow")
        return
    names, context_names = _names(config, "names", 2), _names(config, "context_names", 0)
    flow = _name(config, "flow", TABLE_FLOWS)
    parameter_budget(depth * hidden * (2 * hidden + len(names) + len(context_names)), f"the {flow} flow")


def build_data_model(config: dict, train: torch.Tensor | LazyRows | None = None):
    """The model a data run's ``config`` describes (checked first by :func:`check_data_config`). Tables:
    the preset followed by a :class:`~flowforge.flows.Whitening` layer with the mean and covariance of
    ``train`` (so the model starts as the full-covariance Gaussian of the training data and works in the
    data's units; rows read on demand in one streaming pass, :func:`~flowforge.streaming.moments`);
    without ``train``, placeholders that ``load_state_dict`` fills."""
    check_data_config(config)
    if config["kind"] == "images":
        classes = 10 if config.get("class_cond") else None
        return Glow(tuple(config["shape"]), config["scales"], steps=config["layers"], hidden=config["hidden"],
                    num_classes=classes)  # fmt: skip
    dim, context_features = len(config["names"]), len(config["context_names"]) or None
    model = TABLE_FLOWS[config["flow"]](
        dim, config["layers"], hidden=config["hidden"], context_features=context_features
    )
    if train is None:  # float64 statistics whatever the model's dtype (see split_whitening)
        model.flows.append(Whitening(torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)))
    else:
        try:
            whitening = (
                Whitening.from_moments(*moments(train))
                if isinstance(train, LazyRows)
                else Whitening.from_data(train.double())
            )
            model.flows.append(whitening)
        except ValueError as error:
            raise CLIError(f"the training data cannot be fitted: {error}") from None
    return model


def split_whitening(model) -> tuple[Any, Whitening | None]:
    """A table model as the flow that works in whitened units (sharing its layers and base) and its
    last layer, the :class:`~flowforge.flows.Whitening` with float64 statistics; other models as
    ``(model, None)``.

    The whitened flow is what trains, in float32, on data whitened in float64: casting the data first
    would round away what lies far from the origin (an offset of 1e6 leaves a few distinct float32
    values per unit). :func:`data_log_prob` and the samples go through the whitening in float64."""
    flows = getattr(model, "flows", None)
    if not isinstance(model, NormalizingFlow) or not flows or not isinstance(flows[-1], Whitening):
        return model, None
    return NormalizingFlow(model.q0, list(flows)[:-1]), flows[-1]


def data_log_prob(model, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """``log q(x)`` (or ``log q(x | c)``) of rows ``x`` in the data's units, float64, on ``x``'s device:
    for a table model the whitening runs in float64 and the rest in the model's dtype."""
    inner, whitening = split_whitening(model)
    like = next(inner.parameters())
    if whitening is None:
        rows = x.to(like)
        log_q = model.log_prob(rows) if context is None else model.log_prob(rows, context.to(like))
        return log_q.double()
    z, log_det = whitening.inverse(x.double().to(like.device))
    inner_context = None if context is None else context.to(like)
    log_q = inner.log_prob(z.to(like)) if inner_context is None else inner.log_prob(z.to(like), inner_context)
    return log_q.double() + log_det
