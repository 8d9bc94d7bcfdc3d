"""``flowforge fit --data SOURCE``: fitting a flow to data, and drawing samples of its runs.

A source is a file (CSV, TXT, NPY, NPZ), a toy set by name, a bundled real table (``wine``,
``breast-cancer``) or the bundled ``digits`` images. Tabular data are whitened with the training
split's mean and covariance, stored in the model as its last layer (:class:`Whitening`), so the
model starts as the full-covariance Gaussian and ``log_prob`` and samples are in the data's own
units; a context (``--context COLS``) is standardised and its statistics kept in the checkpoint.
Images are dequantised and modelled on ``[0, 1]`` by a multi-scale Glow. The run's kind is
``"table"`` or ``"images"``.

A ``.npy`` file is read a batch at a time (:class:`~flowforge.streaming.LazyRows`, with ``pread``)
with ``--stream``, or when it is larger than :data:`STREAM_BYTES`: the whitening statistics come from one
streaming pass in float64, and the memory the run holds is bounded by the batch and the row numbers of
the splits, not by the file. ``flowforge convert`` turns a CSV table into such a file.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .. import metrics, plot
from ..datasets import DIGITS_LEVELS, REAL_TABLES, TOY_DATA, DataError, load_digits, load_real_table, load_table, split
from ..metrics import nll_per_row
from ..streaming import LazyRows, Rows, chunks, mean_and_standard_error, moments
from ..training import DataFitResult, TrainingDiverged, TrainingInterrupted, distributed, fit_data
from ..version import __version__
from . import runs
from .errors import CLIError
from .models import MAX_LEVELS, TABLE_FLOWS, build_data_model, check_data_config, data_log_prob, split_whitening
from .validators import (
    batch_size,
    box,
    device,
    fractions,
    integer,
    net_width,
    pictures,
    positive_float,
    positive_int,
    sample_memory,
)

MAX_TEXT_BYTES = 2**28
"""The largest .csv/.txt table read: parsing holds its cells as Python strings, about ten times the file's size."""
MAX_ARRAY_BYTES = 2**32
"""The largest .npy/.npz array read (it is then copied once as float64)."""
STREAM_BYTES = 2**30
"""A ``.npy`` file larger than this is read a batch at a time, as with ``--stream``."""
STREAMED_SAMPLES = 100_000
"""The samples a streamed run writes by default (other runs write one per test row)."""
MAX_TOY_ROWS = 10**7
"""The most rows drawn from a toy set: they are generated in memory at once."""
toy_rows = integer(1, MAX_TOY_ROWS, "a toy set is generated in memory at once")
glow_levels = integer(1, MAX_LEVELS, "each level halves the images' side")

IMAGE_SETS = ("digits",)
IMAGE_FLOWS = ("glow",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fit`` that apply to data fits."""
    group = parser.add_argument_group("fitting data (with --data)")
    group.add_argument(
        "--data",
        metavar="SOURCE",
        help=f"fit to data instead of a target: a .csv/.txt/.npy/.npz file, a toy set ({', '.join(TOY_DATA)}), "
        f"a bundled table ({', '.join(REAL_TABLES)}) or bundled images (digits)",
    )
    group.add_argument("--columns", metavar="COLS", help="data columns, by name or 0-based index: a,b,3")
    group.add_argument("--context", metavar="COLS", help="columns to condition on (a conditional flow)")
    group.add_argument("--key", help="array name inside an .npz file")
    group.add_argument(
        "--stream",
        action="store_true",
        help=f"read a .npy file a batch at a time instead of into memory (automatic above {STREAM_BYTES // 2**30} GiB)",
    )
    group.add_argument("--class-cond", action="store_true", help="images: condition on the class labels")
    group.add_argument("--num-data", type=toy_rows, default=20_000, help="rows drawn from a toy set")
    group.add_argument("--split", type=fractions, default=(0.8, 0.1, 0.1), metavar="TRAIN,VAL,TEST")
    group.add_argument("--epochs", type=positive_int, default=200)
    group.add_argument("--batch-size", type=batch_size, default=None, help="default 256 (images: 64)")
    group.add_argument("--patience", type=positive_int, default=20, help="epochs without validation gain")
    group.add_argument("--hidden", type=net_width, default=64, help="hidden units (channels for glow)")
    group.add_argument("--scales", type=glow_levels, default=2, help="glow: number of levels")
    group.add_argument("--clip-grad", type=positive_float, default=10.0, help="gradient-norm clipping")
    group.add_argument("--num-samples", type=positive_int, default=None, help="samples to write (default: test rows)")


def _selection(spec: str | None, names: list[str], what: str) -> list[int] | None:
    if spec is None:
        return None
    chosen = []
    for item in (part.strip() for part in spec.split(",")):
        if item in names:
            chosen.append(names.index(item))
        elif (index := _column_index(item)) is not None and -len(names) <= index < len(names):
            chosen.append(index % len(names))
        else:
            raise CLIError(f"{what}: no column {item!r}; columns are {', '.join(names)}")
    if len(set(chosen)) != len(chosen):
        raise CLIError(f"{what}: a column is named twice in {spec!r}")
    return chosen


def _column_index(item: str) -> int | None:
    try:
        return int(item)
    except ValueError:
        return None


def bundled(load: Callable[..., Any], *args: str) -> Any:
    """A bundled data set; without scikit-learn, the line that says how to install it."""
    try:
        return load(*args)
    except ImportError as error:
        raise CLIError(str(error)) from None


def load_source(args: argparse.Namespace) -> dict:
    """Read the data a run asks for: ``{"kind": "table"|"images", "data", "context", "names", ...}``."""
    source = args.data
    if args.key is not None and Path(source).suffix.lower() != ".npz":
        raise CLIError(f"--key names an array inside an .npz file; --data {source!r} is not one")
    if source in IMAGE_SETS:
        if args.columns or args.context:
            raise CLIError("--columns and --context apply to tables; for digits use --class-cond")
        images, labels = bundled(load_digits)
        return {"kind": "images", "data": images, "labels": labels, "levels": DIGITS_LEVELS, "names": None}
    if args.class_cond:
        raise CLIError("--class-cond needs labelled images (--data digits)")
    streamed = _streamed(args)
    table: torch.Tensor | LazyRows
    try:
        if streamed:
            table = LazyRows.open(runs.input_path(args))
            names = [f"x{i + 1}" for i in range(table.shape[1])]
        elif source in TOY_DATA:
            table, names = TOY_DATA[source](args.num_data, seed=args.seed).double(), ["x1", "x2"]
        elif source in REAL_TABLES:
            table, names = bundled(load_real_table, source)
        else:
            path = Path(runs.input_path(args))
            if not path.suffix and not path.exists():
                known = ", ".join([*TOY_DATA, *REAL_TABLES, *IMAGE_SETS])
                raise CLIError(f"--data {source!r} is neither a file nor a known data set ({known})")
            limit = MAX_TEXT_BYTES if path.suffix.lower() in (".csv", ".txt") else MAX_ARRAY_BYTES
            table, names = load_table(path, key=args.key, max_bytes=limit)
    except DataError as error:
        raise CLIError(str(error)) from None
    context_index = _selection(args.context, names, "--context") or []
    data_index = _selection(args.columns, names, "--columns")
    if data_index is None:
        data_index = [i for i in range(len(names)) if i not in context_index]
    overlap = sorted(set(data_index) & set(context_index))
    if overlap:
        raise CLIError(f"column(s) {[names[i] for i in overlap]} are both data and context")
    if len(data_index) < 2:
        raise CLIError(f"need at least 2 data columns for a flow, got {[names[i] for i in data_index]}")
    data: Rows
    context: Rows | None
    if isinstance(table, LazyRows):
        data, context = table.select(data_index), (table.select(context_index) if context_index else None)
    else:
        data, context = table[:, data_index], (table[:, context_index] if context_index else None)
    return {
        "kind": "table",
        "data": data,
        "context": context,
        "names": [names[i] for i in data_index],
        "context_names": [names[i] for i in context_index],
    }


def _named(args: argparse.Namespace) -> bool:
    """Whether ``--data`` names a data set (a toy set, a bundled table or images) rather than a file."""
    return args.data in TOY_DATA or args.data in REAL_TABLES or args.data in IMAGE_SETS


def _streamed(args: argparse.Namespace) -> bool:
    """Whether ``--data`` is read a batch at a time: with ``--stream`` (a ``.npy`` file only) or for a
    ``.npy`` file larger than :data:`STREAM_BYTES`."""
    path = None if _named(args) else Path(runs.input_path(args))
    is_npy = path is not None and path.suffix.lower() == ".npy"
    if getattr(args, "stream", False) and not is_npy:
        raise CLIError(
            f"--stream reads a .npy file a batch at a time; --data {args.data!r} is not one (convert a CSV table "
            "once with `flowforge convert TABLE.csv TABLE.npy`)"
        )
    if getattr(args, "stream", False):
        return True
    return is_npy and path is not None and path.is_file() and path.stat().st_size > STREAM_BYTES


def _inputs(args: argparse.Namespace) -> dict[str, str]:
    """The input file of a data run, which its run folder must not write over."""
    return {} if _named(args) else {"--data": runs.input_path(args)}


def _standardise(context: Rows | None, mean: torch.Tensor, std: torch.Tensor) -> Rows | None:
    if isinstance(context, LazyRows):
        return context.map(lambda values: (values - mean) / std)
    return None if context is None else (context - mean) / std


def _check_statistics(data: Rows, names: list[str], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, LazyRows):
        mean, covariance = moments(data)
        std = covariance.diagonal().sqrt()
    else:
        mean, std = data.mean(0), data.std(0, unbiased=False)
    constant = [names[i] for i in torch.nonzero(std == 0).flatten().tolist()]
    if constant:
        raise CLIError(f"{what} column(s) {constant} are constant in the training split; drop them")
    overflow = [names[i] for i in torch.nonzero(~torch.isfinite(std * std)).flatten().tolist()]
    if overflow:
        largest = max(float(values.abs().max()) for values in chunks(data))
        raise CLIError(
            f"{what} column(s) {overflow} are too large for their covariance in float64 (values up to {largest:.3g}); "
            "rescale them"
        )
    return mean, std


def run(args: argparse.Namespace) -> Path:
    """``fit --data``: split, whiten, fit with early stopping, and write the run folder.

    Under ``torchrun`` every process reads and splits the data and builds the model alike, and
    :func:`~flowforge.training.fit_data` trains data-parallel (:mod:`flowforge.training.distributed`); only
    process 0 opens the run folder, writes its files and prints, and ``metrics.json`` records the
    ``world_size``."""
    chosen = device(args.device)
    world = None
    if distributed.launched():
        chosen = distributed.local_device(chosen)  # "cuda": cuda:LOCAL_RANK, one device per process
        world = distributed.join(chosen)
    pictures()
    flow = args.flow or ("glow" if args.data in IMAGE_SETS else "nsf")
    source = load_source(args)
    images = source["kind"] == "images"
    allowed = IMAGE_FLOWS if images else tuple(TABLE_FLOWS)
    if flow not in allowed:
        kind = "images" if images else "tabular data"
        raise CLIError(f"--flow {flow} does not fit {kind}; choose one of {', '.join(allowed)}")
    torch.manual_seed(args.seed)
    context = source["labels"] if images and args.class_cond else source.get("context")
    tensors = (source["data"],) if context is None else (source["data"], context)
    try:
        parts = split(tensors, tuple(args.split), seed=args.seed)
    except ValueError as error:
        raise CLIError(str(error)) from None
    (train, *train_rest), (validation, *validation_rest), (test, *test_rest) = parts
    if len(validation) == 0 or len(test) == 0:
        raise CLIError(f"{len(source['data'])} rows leave no validation or test rows with --split {args.split}")
    train_c: Rows | None
    validation_c: Rows | None
    test_c: Rows | None
    train_c, validation_c, test_c = (rest[0] if rest else None for rest in (train_rest, validation_rest, test_rest))
    config = {
        "data": args.data,
        "names": source["names"],
        "context_names": source.get("context_names", []),
        "class_cond": bool(args.class_cond),
        "flow": flow,
        "layers": args.layers or (4 if images else 6),
        "hidden": args.hidden,
        "scales": args.scales,
        "shape": list(source["data"].shape[1:]),
        "levels": source.get("levels"),
        "split": list(args.split),
        "rows": {"train": len(train), "validation": len(validation), "test": len(test)},
        "epochs": args.epochs,
        "batch_size": args.batch_size or (64 if images else 256),
        "patience": args.patience,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "clip_grad": args.clip_grad,
        "seed": args.seed,
        "device": str(chosen),
        "flowforge_version": __version__,
        "invocation": runs.invocation(args),
        "data_sha256": runs.fingerprint(source["data"], context),
    }
    if isinstance(source["data"], LazyRows):
        config["stream"] = True
    check_data_config({**config, "kind": source["kind"]})  # the run folder adds the kind when it writes config.json
    if args.num_samples is None:
        args.num_samples = min(len(test), STREAMED_SAMPLES) if isinstance(test, LazyRows) else len(test)
    if not images:
        sample_memory(args.num_samples, len(config["names"]) + len(config["context_names"]), "--num-samples")
    statistics: dict[str, torch.Tensor] = {}
    if not images:
        _check_statistics(train, source["names"], "data")
        if train_c is not None:
            context_mean, context_std = _check_statistics(train_c, config["context_names"], "context")
            statistics.update(context_mean=context_mean, context_std=context_std)
            train_c, validation_c, test_c = (
                _standardise(c, context_mean, context_std) for c in (train_c, validation_c, test_c)
            )
    if world is not None and not world.is_main:
        typed = {**config, "kind": source["kind"]}  # what the run folder would record
        runs.fit_beside(args, _data_fit(args, typed, (train, validation), (train_c, validation_c), chosen)[2])
        return Path(args.out)
    with runs.open_run(
        args.out, source["kind"], overwrite=args.overwrite, inputs=_inputs(args), resume=runs.resuming(args)
    ) as run_folder:
        config = run_folder.start(config)
        _fit(
            args, config, (train, validation, test), (train_c, validation_c, test_c), statistics, chosen, run_folder,
            world_size=1 if world is None else world.size,
        )  # fmt: skip
    return run_folder.path


def _whitened(whitening, data: Rows) -> Rows:
    """Rows of a table in the whitened units the flow trains in, mapped in float64 (on the model's device);
    rows read on demand are mapped as each batch is read."""
    if isinstance(data, LazyRows):
        return data.map(lambda values: whitening.inverse(values.to(whitening.mean.device))[0])
    return whitening.inverse(data.double().to(whitening.mean.device))[0]


def _data_fit(
    args: argparse.Namespace, config: dict, parts, contexts, chosen
) -> tuple[nn.Module, Any, Callable[..., DataFitResult]]:
    """The run's model, its whitening (None for images) and its fit: :func:`fit_data` of the flow with the
    run's settings on the training and validation rows (whitened for a table, in float64 and only then
    cast to the model's dtype), taking the options that differ between processes (``progress``,
    ``checkpoint``, ``resume``)."""
    (train, validation), (train_c, validation_c) = parts, contexts
    model = build_data_model(config, None if config["kind"] == "images" else train).to(chosen)
    flow, whitening = split_whitening(model)
    fitted = (
        (train, validation) if whitening is None else (_whitened(whitening, train), _whitened(whitening, validation))
    )
    fit = partial(
        fit_data, flow, *fitted, train_context=train_c, validation_context=validation_c,
        levels=config["levels"], epochs=args.epochs, batch_size=config["batch_size"], lr=args.lr,
        weight_decay=args.weight_decay, clip_grad_norm=args.clip_grad, patience=args.patience,
        seed=args.seed, device=chosen,
    )  # fmt: skip
    return model, whitening, fit


def _fit(
    args: argparse.Namespace,
    config: dict,
    parts,
    contexts,
    statistics: dict,
    chosen,
    run_folder: runs.RunFolder,
    world_size: int = 1,
) -> None:
    """Fit the model, evaluate it, and write the run's files to ``out``.

    A table model trains in whitened units (:func:`~flowforge.cli.models.split_whitening`): the data
    are whitened in float64 and only then cast to the model's dtype. Its NLLs are in the data's units:
    the whitening's log-determinant is added to what the whitened flow reports."""
    (train, validation, test), (train_c, validation_c, test_c) = parts, contexts
    out = run_folder.path
    model, whitening, fit = _data_fit(args, config, (train, validation), (train_c, validation_c), chosen)
    shift = 0.0 if whitening is None else float(torch.log(torch.diagonal(whitening.cholesky)).sum())
    try:
        result = fit(progress=not args.no_progress, checkpoint=run_folder.training_state, resume=run_folder.resume_from)
        diverged = None
    except TrainingDiverged as error:
        result, diverged = cast(DataFitResult, error.result), str(error)
    except TrainingInterrupted:
        runs.save_checkpoint(out, config, model.eval(), context=statistics)  # the best weights so far
        raise
    model.eval()
    runs.save_checkpoint(out, config, model, context=statistics)
    curves = {"training": result.train_nll + shift, "validation": result.validation_nll + shift}
    plot.save_epoch_curves(out / "loss.png", curves, "NLL (nats per row)")
    numbers = _data_metrics(model, config, result, shift, (train, validation, test), validation_c, test_c)
    numbers["diverged"] = diverged
    numbers["world_size"] = world_size
    _write_samples(out, model, config, train, test, test_c, args.num_samples, statistics)
    runs.write_json(out / runs.METRICS, numbers)
    summary = f"test NLL = {numbers['test_nll']:.4f} ± {numbers['test_nll_standard_error']:.4f} nats"
    if "bits_per_dim" in numbers:
        summary += f" ({numbers['bits_per_dim']:.3f} bits/dim)"
    if "gaussian_test_nll" in numbers:
        summary += f", full-covariance Gaussian {numbers['gaussian_test_nll']:.4f}"
    print(
        f"{summary}, {len(result.train_nll)} epochs (best {result.best_epoch + 1}), {result.wall_time:.1f} s -> {out}"
    )
    if diverged:
        raise CLIError(f"training stopped: {diverged} (the checkpoint of the best state is in {out})")


def _nll(model, data: Rows, context: Rows | None, levels: int | None) -> tuple[float, float]:
    """The mean ``−log q`` of the rows in the data's units (:func:`~flowforge.cli.models.data_log_prob` for
    tables) and its standard error, a chunk of rows at a time (none of them kept)."""
    if levels is not None:
        values = iter([nll_per_row(model, data, context=context, levels=levels)])
    else:
        contexts = [None] * -(-len(data) // 4096) if context is None else chunks(context, 4096)
        values = (
            -data_log_prob(model, rows, rows_context).cpu()
            for rows, rows_context in zip(chunks(data, 4096), contexts, strict=True)
        )
    with torch.no_grad():
        return mean_and_standard_error(values)


def _data_metrics(model, config, result, shift: float, parts, validation_c, test_c) -> dict:
    train, validation, test = parts
    levels = config["levels"]
    test_nll, test_error = _nll(model, test, test_c, levels)
    numbers = {
        "test_nll": test_nll,
        "test_nll_standard_error": test_error,
        "validation_nll": _nll(model, validation, validation_c, levels)[0],
        "train_nll_last_epoch": float(result.train_nll[-1]) + shift if len(result.train_nll) else None,
        "epochs": len(result.train_nll),
        "best_epoch": result.best_epoch + 1,
        "stopped_early": result.stopped_early,
        "train_time_s": result.wall_time,
        "dim": math.prod(test.shape[1:]),
        "rows": config["rows"],
    }
    if levels is not None:
        numbers["bits_per_dim"] = metrics.bits_per_dim(numbers["test_nll"], numbers["dim"])
    elif not config["context_names"]:
        try:
            numbers["gaussian_test_nll"], _ = metrics.gaussian_nll(train, test)
            numbers["margin_over_gaussian"] = numbers["gaussian_test_nll"] - numbers["test_nll"]
        except ValueError:
            numbers["gaussian_test_nll"] = None
    return numbers


@torch.no_grad()
def draw_samples(
    model, config: dict, count: int, context: torch.Tensor | None, temperature: float | None = None
) -> torch.Tensor:
    """``count`` samples in the data's units (integer grey levels for images); ``context`` is one row per
    sample (standardised) or, for class-conditional images, labels."""
    flow, whitening = split_whitening(model)
    like = next(flow.parameters())
    chunks = []
    for start in range(0, count, 4096):
        size = min(4096, count - start)
        rows = None if context is None else context[start : start + size].to(like.device)
        if config["kind"] == "images":
            x, _ = model.sample(size, rows, temperature=temperature)
            levels = config["levels"]  # the dequantised value (k + u)/levels belongs to level k
            chunks.append((x.double() * levels).floor().clamp(0, levels - 1).cpu())
        else:
            x, _ = flow.sample(size) if rows is None else flow.sample(size, rows.to(like))
            if whitening is not None:  # into the data's units in float64
                x, _ = whitening.forward(x.double())
            chunks.append(x.double().cpu())
    return torch.cat(chunks)


def _histogram(rows: Rows, bounds, bins: int = 100) -> np.ndarray:
    """:func:`~flowforge.plot.histogram2d` of 2-D rows in memory or read on demand, a chunk at a time."""
    counts = np.zeros((bins, bins), dtype=np.int64)
    for values in chunks(rows):
        counts += plot.histogram2d(values, bounds, bins)
    return counts


def _write_samples(out: Path, model, config, train, test, test_c, count, statistics) -> None:
    if config["kind"] == "images":
        labels = torch.arange(10).repeat_interleave(8) if config["class_cond"] else None
        rows = [f"class {k}" for k in range(10)] if config["class_cond"] else None
        for temperature, name in ((None, "samples.png"), (0.7, "samples-t0.7.png")):
            shown = draw_samples(model, config, 80, labels, temperature) / (config["levels"] - 1)
            title = "flow samples" + (f" at temperature {temperature}" if temperature else "")
            plot.save_image_grid(out / name, shown.numpy(), 8, title, rows)
        plot.save_image_grid(out / "data.png", (test[:80] / (config["levels"] - 1)).numpy(), 8, "test images")
        samples = draw_samples(
            model, config, count, None if test_c is None else test_c.repeat(-(-count // len(test_c)))[:count]
        )
        runs.save_npy(out / "samples.npy", samples.numpy())
        return
    if isinstance(test, LazyRows):  # a seeded random part of the test rows, which are in file order
        shown = np.random.default_rng(config["seed"]).permutation(len(test))[: min(len(test), count)]
        test, test_c = test.take(shown), None if test_c is None else test_c.take(shown)
    context = None if test_c is None else test_c.repeat(-(-count // len(test_c)), 1)[:count]
    samples = draw_samples(model, config, count, context)
    columns = samples
    header = list(config["names"])
    if context is not None:
        original = context * statistics["context_std"] + statistics["context_mean"]
        columns, header = torch.cat([samples, original], 1), header + list(config["context_names"])
    runs.save_csv(out / "samples.csv", columns.numpy(), header)
    plot.save_pair_plot(out / "pairs.png", test.numpy(), samples.numpy(), config["names"])
    if len(config["names"]) == 2 and context is None:
        low, high = np.percentile(test.numpy(), [0.5, 99.5], axis=0)
        spread = high - low  # a column that is (nearly) constant gets a window of its own size, or of 1
        margin = 0.1 * np.where(spread > 0, spread, np.maximum(np.abs(high), 1.0))
        bounds = box(list(zip(low - margin, high + margin, strict=True)))
        grid_like = torch.empty(0, dtype=torch.float64, device=next(model.parameters()).device)
        density = plot.density_on_grid(lambda points: data_log_prob(model, points), bounds, 100, grid_like)
        sample_counts = plot.histogram2d(draw_samples(model, config, 100_000, None), bounds, 100)
        plot.save_comparison(
            out / "comparison.png",
            [
                ("training data", _histogram(train, bounds)),
                ("learned density", density),
                ("flow samples (100000)", sample_counts),
            ],  # fmt: skip
            bounds,
        )
