"""Pictures of densities, samples and training, written to files (headless, no pyplot state).

Every writer goes through :func:`atomic_path` (:func:`flowforge.utils.files.atomic_path`,
re-exported here), so an interrupted run or a full disk never leaves a half-written file behind.
matplotlib and Pillow are optional (the ``cli`` extra): without them the module still imports and
its histogram helpers work, while every picture writer raises an :class:`ImportError` that says how
to install them (:func:`require`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch

from .metrics import Bounds, evaluate_in_chunks, grid_points
from .model import NormalizingFlow
from .utils.files import atomic_path

MISSING_PICTURE_PACKAGES = (
    'flowforge draws its pictures with matplotlib and Pillow ({name} is missing): pip install "flowforge[cli]"'
)
"""The one-line message of the :class:`ImportError` raised when matplotlib or Pillow is missing."""

try:
    import matplotlib
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from PIL import Image, ImageDraw
except ImportError as error:  # optional: only the picture writers need them
    _missing: str | None = (error.name or "matplotlib").split(".")[0]  # the package, not its submodule
else:
    _missing = None


def require() -> None:
    """Raise :class:`ImportError` with :data:`MISSING_PICTURE_PACKAGES` unless matplotlib and Pillow
    are installed (a command can call it before it starts work that ends in pictures)."""
    if _missing is not None:
        raise ImportError(MISSING_PICTURE_PACKAGES.format(name=_missing), name=_missing)


def _figure(**options: Any) -> Figure:
    require()
    return Figure(layout="constrained", **options)


class Sampler(Protocol):
    """What :func:`sample_histogram` needs of a model: ``sample(n) -> (x, log q(x))``."""

    def sample(self, num_samples: int, /) -> tuple[torch.Tensor, torch.Tensor]: ...


@torch.no_grad()
def histogram2d(samples: torch.Tensor, bounds: Bounds, bins: int) -> np.ndarray:
    """Counts of 2-D ``samples`` in a ``bins × bins`` grid over ``bounds``; ``[i, j]`` is x-bin i, y-bin j.
    Cells are closed below and open above; points outside the grid (and NaN) are not counted."""
    cells = _sample_cells(samples, bounds, bins)
    return torch.bincount(cells, minlength=bins * bins + 1)[: bins * bins].reshape(bins, bins).cpu().numpy()


def _sample_cells(samples: torch.Tensor, bounds: Bounds, bins: int) -> torch.Tensor:
    if samples.dim() != 2 or samples.shape[1] != 2:
        raise ValueError(f"histogram2d expects samples of shape (n, 2), got {tuple(samples.shape)}")
    return _cell_indices(samples[:, 0], samples[:, 1], bounds, bins)


def _cell_indices(x: torch.Tensor, y: torch.Tensor, bounds: Bounds, bins: int) -> torch.Tensor:
    """The flat cell index ``i · bins + j`` of each point ``(x, y)`` in the grid of :func:`histogram2d`,
    and ``bins²`` for a point outside it: eight elementwise operations, none of them on 64-bit data
    before the last."""
    if not x.is_floating_point() or x.element_size() < 4:  # integers, float16, bfloat16: bin in float32
        x, y = x.float(), y.float()
    if x.dtype != torch.float64 and bins * bins >= 2**24:  # the flat index is formed in floating point
        x, y = x.double(), y.double()
    (x_low, x_high), (y_low, y_high) = bounds
    if not (math.isfinite(x_high - x_low) and math.isfinite(y_high - y_low) and x_high > x_low and y_high > y_low):
        raise ValueError(f"histogram bounds must be finite intervals (low, high) with low < high, got {bounds}")
    i = torch.sub(x, x_low).mul_(bins / (x_high - x_low)).floor_()
    j = torch.sub(y, y_low).mul_(bins / (y_high - y_low)).floor_()
    inside = (i >= 0) & (i < bins) & (j >= 0) & (j < bins)
    return torch.where(inside, i.mul_(bins).add_(j), bins * bins).long()


PICTURE_THREADS: int | None = None
"""CPU threads for the pictures' sampling (:func:`picture_threads`): None chooses between one thread and
torch's setting by timing the work (:class:`ThreadChoice`); a number fixes it."""

REPROBE_EVERY = 16
"""A :class:`ThreadChoice` times the thread count it is not using once in this many calls."""


class ThreadChoice:
    """The CPU thread count for a piece of work repeated many times (the animation's frames), chosen by
    timing it. Each candidate (one thread, and torch's setting) is tried first; then the one with the
    shorter median of its last three times runs, and the other is timed again once every
    :data:`REPROBE_EVERY` calls, so the choice follows the machine's load.

    Why: on 2 cores a frame of the seed model took 96 ms with two threads and 161 ms with one on a
    quiet machine, and 650 against 182 ms beside one busy process (``python -m benchmarks.frames``):
    the parallel kernels pay only while no other process wants a core, and then cost several times
    their gain."""

    def __init__(self, candidates: Sequence[int]) -> None:
        self.times: dict[int, list[float]] = {count: [] for count in dict.fromkeys(candidates)}
        self.calls = 0

    def choose(self) -> int:
        """The thread count for the next call."""
        untried = [count for count, times in self.times.items() if not times]
        if untried:
            return untried[0]
        self.calls += 1
        ranked = sorted(self.times, key=lambda count: float(np.median(self.times[count][-3:])))
        return ranked[1] if len(ranked) > 1 and self.calls % REPROBE_EVERY == 0 else ranked[0]

    def record(self, threads: int, seconds: float) -> None:
        self.times[threads].append(seconds)
        del self.times[threads][:-3]


_CHOICES: dict[tuple[Any, ...], ThreadChoice] = {}


@contextmanager
def picture_threads(work: tuple[Any, ...] = ()) -> Iterator[None]:
    """Run the block with :data:`PICTURE_THREADS` CPU threads or, when that is None, with the count a
    :class:`ThreadChoice` for this kind of ``work`` (a key: its sizes) picks, timing the block for it;
    torch's setting is restored after."""
    previous = torch.get_num_threads()
    if PICTURE_THREADS is not None:
        threads, choice = min(PICTURE_THREADS, previous), None
    else:
        choice = _CHOICES.setdefault((*work, previous), ThreadChoice([1, previous]))
        threads = choice.choose()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        yield
    finally:
        if choice is not None:
            choice.record(threads, time.perf_counter() - start)
        torch.set_num_threads(previous)


ColumnMap = Callable[[torch.Tensor], None]
"""A ``column_map()``: moves a block of points held as columns ``(dim, n)`` in place."""

COLUMN_BLOCK = 2**16
"""Points pushed together by the column fast path of :func:`sample_histogram`: a block of a few columns
of this length stays in the core's cache through all the layers and the binning."""


@torch.no_grad()
def sample_histogram(model: Sampler, count: int, bounds: Bounds, bins: int, chunk: int = 2**18) -> np.ndarray:
    """:func:`histogram2d` of ``count`` samples of a 2-D ``model``, drawn ``chunk`` at a time
    without autograd, so memory stays that of one chunk however many points are drawn.

    A 2-D :class:`~flowforge.model.NormalizingFlow` whose base has ``noise`` and ``column_map`` (the
    diagonal Gaussian) and whose layers all have ``column_map`` (planar layers: the seed's flow) takes a
    fast path: the same base draws (so the random stream is the one :meth:`sample` uses), mapped as
    columns in cache-sized blocks through the base and the layers and binned there, without
    log-densities; the points equal :meth:`sample`'s to rounding. The CPU thread count is chosen by
    timing (:func:`picture_threads`). ``python -m benchmarks.frames`` measures both paths and the thread
    policies, quiet and beside a busy process."""
    maps = _column_maps(model)
    counts = torch.zeros(bins * bins + 1, dtype=torch.int64)
    with picture_threads(("sample_histogram", count, bins, chunk, maps is None)):
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            if maps is None:
                cells = _sample_cells(model.sample(size)[0], bounds, bins)
            else:
                cells = _column_cells(cast(Any, model).q0, maps, size, bounds, bins)
            counts += torch.bincount(cells, minlength=bins * bins + 1).cpu()
    return counts[: bins * bins].reshape(bins, bins).numpy()


def _column_cells(base: Any, maps: list[ColumnMap], size: int, bounds: Bounds, bins: int) -> torch.Tensor:
    """The cells (:func:`_cell_indices`) of ``size`` samples: ``base``'s noise mapped through ``maps`` (the
    base's own first), block by block, each block's draws turned into columns while in the cache."""
    noise = base.noise(size)
    cells = torch.empty(size, dtype=torch.int64, device=noise.device)
    for rows, block_cells in zip(noise.split(COLUMN_BLOCK), cells.split(COLUMN_BLOCK), strict=True):
        block = rows.new_empty(rows.shape[::-1])
        for column, coordinate in zip(block, rows.unbind(1), strict=True):
            column.copy_(coordinate)  # a strided copy per coordinate: several times faster than .t().contiguous()
        for push in maps:
            push(block)
        block_cells.copy_(_cell_indices(block[0], block[1], bounds, bins))
    return cells


def _column_maps(model: Any) -> list[ColumnMap] | None:
    """The column maps of ``model``'s base and layers, in order, when :func:`sample_histogram` may take
    its fast path; else None."""
    if type(model) is not NormalizingFlow or not hasattr(model.q0, "noise") or model.q0.shape != (2,):
        return None
    parts = [model.q0, *model.flows]
    return [part.column_map() for part in parts] if all(hasattr(part, "column_map") for part in parts) else None


def density_on_grid(
    log_prob: Callable[[torch.Tensor], torch.Tensor], bounds: Bounds, size: int, like: torch.Tensor
) -> np.ndarray:
    """``exp(log_prob)`` on the cell centres of a ``size × size`` grid, ``[i, j]`` = x-cell i, y-cell j
    (with the CPU threads of :func:`picture_threads`)."""
    points, _ = grid_points(bounds, size, like)
    with picture_threads(("density_on_grid", size)):
        return torch.exp(evaluate_in_chunks(log_prob, points)).reshape(size, size).cpu().numpy()


def _image_axes(ax: Axes, image: np.ndarray, bounds: Bounds, title: str) -> None:
    (x0, x1), (y0, y1) = bounds
    ax.imshow(image.T, origin="lower", extent=(x0, x1, y0, y1), cmap="viridis", interpolation="nearest", aspect="auto")
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")


def save_image(path: str | os.PathLike, image: np.ndarray, bounds: Bounds, title: str) -> None:
    """Save a density or histogram array as a picture."""
    figure = _figure(figsize=(6, 6))
    _image_axes(figure.subplots(), image, bounds, title)
    _save(figure, path)


def save_loss_curve(path: str | os.PathLike, history: np.ndarray, title: str = "loss") -> None:
    """Loss per iteration with a running mean over 1% of the run."""
    figure = _figure(figsize=(8, 4.5))
    ax = figure.subplots()
    steps = np.arange(1, len(history) + 1)
    ax.plot(steps, history, lw=0.5, alpha=0.4, label="per step")
    window = max(1, len(history) // 100)
    if len(history) >= window:
        smooth = np.convolve(history, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"mean of {window}")
    finite = history[np.isfinite(history)]
    if finite.size:
        low, high = np.percentile(finite, [0.5, 99.5])
        margin = 0.05 * (high - low + 1e-12)
        ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("iteration")
    ax.set_ylabel(title)
    ax.legend()
    _save(figure, path)


def save_epoch_curves(path: str | os.PathLike, curves: dict[str, np.ndarray], ylabel: str = "NLL (nats)") -> None:
    """Per-epoch curves (e.g. training and validation NLL) against the epoch number."""
    figure = _figure(figsize=(8, 4.5))
    ax = figure.subplots()
    for label, values in curves.items():
        if len(values):
            ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if ax.lines:  # a run that diverged in its first epoch has no curve, and no legend to draw
        ax.legend()
    _save(figure, path)


def save_image_grid(
    path: str | os.PathLike, images: np.ndarray, columns: int, title: str, row_labels: Sequence[str] | None = None
) -> None:
    """A grid of grey (``(N, 1, H, W)``) or RGB (``(N, 3, H, W)``) images with values in ``[0, 1]``,
    ``columns`` per row, optionally a label per row."""
    images = np.clip(np.asarray(images, dtype=float), 0, 1)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image grid needs (N, 1 or 3, H, W) images, got shape {images.shape}")
    rows = -(-images.shape[0] // columns)
    figure = _figure(figsize=(0.8 * columns + 1, 0.8 * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= images.shape[0]:
            ax.set_axis_off()
            continue
        picture = images[index].transpose(1, 2, 0)
        ax.imshow(picture[..., 0] if picture.shape[2] == 1 else picture, cmap="gray_r", vmin=0, vmax=1)
    if row_labels is not None:
        for row, label in zip(range(rows), row_labels, strict=False):
            axes[row, 0].set_ylabel(label)
    figure.suptitle(title)
    _save(figure, path)


def save_comparison(path: str | os.PathLike, panels: Sequence[tuple[str, np.ndarray]], bounds: Bounds) -> None:
    """Side-by-side pictures, e.g. target | learned density | samples."""
    figure = _figure(figsize=(5 * len(panels), 5))
    for ax, (title, image) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        _image_axes(ax, image, bounds, title)
    _save(figure, path)


def _save(figure: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=Path(path).suffix.lstrip(".") or "png", dpi=100)


def colour_indices(counts: np.ndarray) -> np.ndarray:
    """The viridis indices (uint8, 0 to 255) of a histogram's cells scaled by its largest count, image
    rows from the top: the compact form of a frame, which :func:`indexed_frame` renders."""
    normalised = counts.T[::-1] / max(counts.max(), 1)
    return np.minimum(normalised * 256, 255).astype(np.uint8)  # matplotlib's rule for floats in [0, 1]


def indexed_frame(indices: np.ndarray, label: str, scale: int = 2) -> np.ndarray:
    """An RGB frame (uint8) of viridis ``indices`` (:func:`colour_indices`), upscaled ``scale`` times, labelled."""
    require()
    rgb = (matplotlib.colormaps["viridis"](indices)[..., :3] * 255).astype(np.uint8)
    image = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST)
    ImageDraw.Draw(image).text((6, 4), label, fill=(255, 255, 255))
    return np.asarray(image)


def histogram_frame(counts: np.ndarray, label: str, scale: int = 2) -> np.ndarray:
    """An RGB frame (uint8) of a histogram in viridis, upscaled ``scale`` times, labelled."""
    return indexed_frame(colour_indices(counts), label, scale)


class HistogramFrames:
    """A training callback (``Every(n, frames)``) that keeps a histogram frame of a 2-D model's samples
    at each call, labelled with the iteration: ``count`` samples in ``bins`` × ``bins`` cells of ``bounds``.

    Frames are kept compactly (:func:`colour_indices`, one byte per cell), and :meth:`state_dict` and
    :meth:`load_state_dict` save and restore them with the training loop's checkpoint, so a resumed
    run's animation holds the frames drawn before the interruption. :meth:`rgb` renders them."""

    def __init__(self, count: int, bounds: Bounds, bins: int) -> None:
        self.count, self.bounds, self.bins = count, bounds, bins
        self.labels: list[str] = []
        self.indices: list[np.ndarray] = []

    def add(self, counts: np.ndarray, label: str) -> None:
        """Keep the frame of the histogram ``counts``."""
        self.labels.append(label)
        self.indices.append(colour_indices(counts))

    def __call__(self, iteration: int, model: torch.nn.Module) -> None:
        drawn = sample_histogram(cast(Sampler, model), self.count, self.bounds, self.bins)
        self.add(drawn, f"iteration {iteration}")

    def __len__(self) -> int:
        return len(self.labels)

    def rgb(self) -> list[np.ndarray]:
        """The frames as RGB images, for :func:`save_gif`."""
        return [indexed_frame(indices, label) for indices, label in zip(self.indices, self.labels, strict=True)]

    def state_dict(self) -> dict:
        shape = (len(self.indices), self.bins, self.bins)
        stacked = torch.from_numpy(np.stack(self.indices)) if self.indices else torch.zeros(shape, dtype=torch.uint8)
        return {"labels": list(self.labels), "indices": stacked}

    def load_state_dict(self, state: dict) -> None:
        labels, indices = state["labels"], state["indices"]
        if not isinstance(indices, torch.Tensor) or indices.dtype != torch.uint8 or indices.dim() != 3:
            raise ValueError("the saved frames are not a (frames, bins, bins) uint8 tensor")
        if indices.shape[0] != len(labels) or tuple(indices.shape[1:]) != (self.bins, self.bins):
            raise ValueError(
                f"the saved frames have shape {tuple(indices.shape)} for {len(labels)} labels; expected "
                f"(frames, {self.bins}, {self.bins})"
            )
        self.labels, self.indices = [str(label) for label in labels], list(indices.numpy())


def save_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], seconds_per_frame: float = 0.1) -> None:
    """Assemble RGB frames into a looping animated GIF (last frame held longer)."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    require()
    images = [Image.fromarray(frame) for frame in frames]
    durations = [int(seconds_per_frame * 1000)] * (len(images) - 1) + [2000]
    with atomic_path(path) as temporary:
        images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)


def save_pair_plot(
    path: str | os.PathLike,
    data: np.ndarray,
    samples: np.ndarray,
    names: Sequence[str] | None = None,
    max_points: int = 3000,
    max_columns: int = 8,
) -> None:
    """Corner plot of ``data`` against flow ``samples`` (same units): marginal histograms on the
    diagonal, pairwise scatter below it. At most ``max_points`` rows of each and the first
    ``max_columns`` columns are drawn."""
    data, samples = np.asarray(data, dtype=float), np.asarray(samples, dtype=float)
    if data.ndim != 2 or samples.ndim != 2 or data.shape[1] != samples.shape[1]:
        raise ValueError(
            f"pair plot needs two (rows, columns) arrays with equal columns, got {data.shape} and {samples.shape}"
        )
    columns = min(data.shape[1], max_columns)
    names = list(names) if names is not None else [f"x{i + 1}" for i in range(data.shape[1])]
    data, samples = data[:max_points, :columns], samples[:max_points, :columns]
    figure = _figure(figsize=(2.2 * columns + 1, 2.2 * columns + 1))
    axes = figure.subplots(columns, columns, squeeze=False)
    for row in range(columns):
        for column in range(columns):
            ax = axes[row, column]
            if column > row:
                ax.set_axis_off()
                continue
            if row == column:
                edges = np.histogram_bin_edges(np.concatenate([data[:, row], samples[:, row]]), bins=40)
                ax.hist(data[:, row], bins=edges, density=True, alpha=0.5, label="data")
                ax.hist(samples[:, row], bins=edges, density=True, alpha=0.5, label="flow")
            else:
                ax.scatter(data[:, column], data[:, row], s=2, alpha=0.3, label="data")
                ax.scatter(samples[:, column], samples[:, row], s=2, alpha=0.3, label="flow")
            if row == columns - 1:
                ax.set_xlabel(names[column])
            if column == 0 and row > 0:
                ax.set_ylabel(names[row])
    axes[0, 0].legend(fontsize="small")
    _save(figure, path)
