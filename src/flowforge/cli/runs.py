"""Run folders: preparing one, writing its files atomically, and reading a run back.

Every command that creates a run writes ``config.json`` through :func:`write_config`, which records
the run's kind explicitly in the field ``"kind"``:

====================  =====================================================  ===============
kind                  written by                                             ``sample``-able
====================  =====================================================  ===============
``"target"``          ``fit`` to a target density, ``demo``                  yes
``"table"``           ``fit --data`` on a table (file, toy set, real table)  yes
``"images"``          ``fit --data digits``                                  yes
``"vae"``             ``vae``                                                no
``"mcmc"``            ``mcmc``                                               no (no model)
``"compare"``         ``compare``                                            no (no model)
====================  =====================================================  ===============

Runs written before the field existed are read by :func:`load_run`, which infers their kind once,
by the rule that version used (:func:`run_kind`). Every file goes through
:func:`~flowforge.plot.atomic_path` (the one the pictures use too): it is written beside its
destination under a hidden temporary name and moved into place with :func:`os.replace` only when
complete, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..plot import atomic_path
from .errors import CLIError
from .models import build_data_model, build_target_model

CONFIG = "config.json"
CHECKPOINT = "model.pt"
METRICS = "metrics.json"
KINDS = ("target", "table", "images", "vae", "mcmc", "compare")
"""Every run kind, as recorded in ``config.json`` and in the checkpoint's config."""
SAMPLED_KINDS = ("target", "table", "images")
"""The kinds whose model ``flowforge sample`` draws from."""


class Run(NamedTuple):
    """A run read back by :func:`load_run`: its model (in eval mode), its config (with ``"kind"``), and
    the context statistics of a conditional table run (``context_mean``, ``context_std``; else empty)."""

    model: Any  # a NormalizingFlow or, for images, a MultiscaleFlow
    config: dict
    statistics: dict


def prepare_out(folder: str | os.PathLike) -> Path:
    """The run folder ``folder``, created if needed and checked to be writable."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".flowforge-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise CLIError(f"cannot write to run folder {str(folder)!r}: {error.strerror or error}") from None
    return path


def write_json(path: str | os.PathLike, data: dict) -> None:
    """``data`` as indented JSON with sorted keys, written atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_config(out: Path, kind: str, config: dict) -> dict:
    """Write ``out/config.json``: ``config`` with ``"kind": kind``; returns that config (for the checkpoint)."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}; expected one of {', '.join(KINDS)}")
    config = {**config, "kind": kind}
    write_json(out / CONFIG, config)
    return config


def save_checkpoint(out: Path, config: dict, model: torch.nn.Module, **extra: Any) -> None:
    """Write ``out/model.pt``: the run's config, the model's state dict and ``extra`` entries."""
    with atomic_path(out / CHECKPOINT) as temporary:
        torch.save({"config": config, "state_dict": model.state_dict(), **extra}, temporary)


def save_npy(path: str | os.PathLike, values: np.ndarray) -> None:
    """``values`` as a NumPy ``.npy`` file, written atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, values)


def save_csv(path: str | os.PathLike, values: np.ndarray, header: Sequence[str]) -> None:
    """``values`` as comma-separated rows below one header line of column names, written atomically."""
    with atomic_path(path) as temporary:
        np.savetxt(temporary, values, delimiter=",", header=",".join(header), comments="")


def run_kind(config: dict) -> str:
    """The run's kind: its ``"kind"`` field, or for runs written before that field existed, ``"vae"``
    when the config names a posterior and ``"target"`` otherwise (data runs always had a kind)."""
    if "kind" in config:
        return config["kind"]
    return "vae" if "posterior" in config else "target"


def load_run(path: str | os.PathLike) -> Run:
    """The run in folder ``path``, ready to sample; a missing, unreadable or unsampleable run is a :class:`CLIError`."""
    checkpoint_path = Path(path) / CHECKPOINT
    if not checkpoint_path.is_file():
        raise CLIError(f"{str(path)!r} is not a run folder: {checkpoint_path} not found")
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        config = {**checkpoint["config"], "kind": run_kind(checkpoint["config"])}
        kind = config["kind"]
        if kind not in SAMPLED_KINDS:
            raise CLIError(f"{str(path)!r} is a {kind} run; sample draws from runs of fit and demo")
        model = build_target_model(config) if kind == "target" else build_data_model(config)
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError, OSError) as error:
        raise CLIError(f"cannot load {checkpoint_path}: {error}") from None
    return Run(model.eval(), config, checkpoint.get("context", {}))
