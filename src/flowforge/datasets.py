"""Data: built-in toy sets (reproducible from a seed), numeric tables from files, splits."""

from __future__ import annotations

import csv
import io
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, overload

import numpy as np
import torch

from .utils.checks import positive_int


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


def two_moons(num_samples: int, noise: float = 0.1, seed: int | None = None) -> torch.Tensor:
    """Two interleaving half circles (the usual "two moons" data), with Gaussian noise of std ``noise``.

    The upper moon is the half circle of radius 1 around (0, 0), the lower one around (1, 0.5)
    turned upside down; the moons are centred and scaled by 2 so they fill about [−3, 3]².
    """
    if num_samples < 1 or noise < 0:
        raise ValueError(f"need num_samples >= 1 and noise >= 0, got {num_samples}, {noise}")
    generator = _generator(seed)
    upper = torch.rand(num_samples, generator=generator) < 0.5
    angle = math.pi * torch.rand(num_samples, generator=generator)
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x - 0.5, y - 0.25], 1) * 2
    return points + noise * torch.randn(num_samples, 2, generator=generator)


def eight_gaussians(num_samples: int, radius: float = 2.0, scale: float = 0.2, seed: int | None = None) -> torch.Tensor:
    """Equal mixture of 8 isotropic Gaussians (std ``scale``) evenly spaced on a circle of ``radius``."""
    if num_samples < 1 or radius <= 0 or scale <= 0:
        raise ValueError(f"need num_samples >= 1 and positive radius and scale, got {num_samples}, {radius}, {scale}")
    generator = _generator(seed)
    angle = 2 * math.pi / 8 * torch.randint(0, 8, (num_samples,), generator=generator)
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + scale * torch.randn(num_samples, 2, generator=generator)


def pinwheel(num_samples: int, arms: int = 5, seed: int | None = None) -> torch.Tensor:
    """``arms`` curved arms: points at radius ~1 ± 0.3 (tangential spread 0.1), each arm rotated
    by ``2π k/arms`` plus an angle growing with the radius (``0.25 e^r``); scaled by 2."""
    positive_int("num_samples", num_samples)
    generator = _generator(seed)
    features = torch.randn(num_samples, 2, generator=generator) * torch.tensor([0.3, 0.1])
    features[:, 0] += 1
    arm = torch.randint(0, arms, (num_samples,), generator=generator)
    angle = 2 * math.pi * arm / arms + 0.25 * torch.exp(features[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack([cos * features[:, 0] - sin * features[:, 1], sin * features[:, 0] + cos * features[:, 1]], 1)
    return 2 * rotated


def checkerboard(num_samples: int, seed: int | None = None) -> torch.Tensor:
    """Uniform on the black squares of a 4×4 checkerboard covering [−4, 4]²."""
    positive_int("num_samples", num_samples)
    generator = _generator(seed)
    x = 4 * torch.rand(num_samples, generator=generator) - 2
    y = torch.rand(num_samples, generator=generator) - 2 * torch.randint(0, 2, (num_samples,), generator=generator)
    y = y + torch.floor(x) % 2
    return 2 * torch.stack([x, y], 1)


def swiss_roll(num_samples: int, noise: float = 0.5, seed: int | None = None) -> torch.Tensor:
    """The 2-D Swiss roll ``t (cos t, sin t)``, ``t ~ U(1.5π, 4.5π)``, plus noise, scaled by 1/5."""
    positive_int("num_samples", num_samples)
    generator = _generator(seed)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(num_samples, generator=generator))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) + noise * torch.randn(
        num_samples, 2, generator=generator
    )
    return points / 5


def circles(num_samples: int, factor: float = 0.5, noise: float = 0.08, seed: int | None = None) -> torch.Tensor:
    """Two concentric circles of radius 1 and ``factor`` (half the points each) plus noise, scaled by 3."""
    positive_int("num_samples", num_samples)
    generator = _generator(seed)
    angle = 2 * math.pi * torch.rand(num_samples, generator=generator)
    radius = torch.where(torch.rand(num_samples, generator=generator) < 0.5, 1.0, factor)
    points = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return 3 * (points + noise * torch.randn(num_samples, 2, generator=generator))


def rings(num_samples: int, noise: float = 0.08, seed: int | None = None) -> torch.Tensor:
    """Four concentric rings of radius 2/3, 4/3, 2 and 8/3 (equal shares) plus noise of std ``noise``."""
    positive_int("num_samples", num_samples)
    generator = _generator(seed)
    angle = 2 * math.pi * torch.rand(num_samples, generator=generator)
    radius = torch.randint(1, 5, (num_samples,), generator=generator).to(torch.get_default_dtype()) * 2 / 3
    points = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return points + noise * torch.randn(num_samples, 2, generator=generator)


def spirals(num_samples: int, noise: float = 0.1, seed: int | None = None) -> torch.Tensor:
    """Two interleaved spirals ``±(−n cos n, n sin n)/3``, ``n = √u · 3π`` (u uniform), plus noise."""
    positive_int("num_samples", num_samples)
    generator = _generator(seed)
    n = torch.sqrt(torch.rand(num_samples, generator=generator)) * 3 * math.pi
    arm = torch.where(torch.rand(num_samples, generator=generator) < 0.5, 1.0, -1.0)
    points = arm[:, None] * torch.stack([-torch.cos(n) * n, torch.sin(n) * n], 1) / 3
    return points + noise * torch.randn(num_samples, 2, generator=generator)


TOY_DATA: dict[str, Callable[..., torch.Tensor]] = {
    "two-moons": two_moons,
    "8-gaussians": eight_gaussians,
    "pinwheel": pinwheel,
    "checkerboard": checkerboard,
    "swiss-roll": swiss_roll,
    "circles": circles,
    "rings": rings,
    "spirals": spirals,
}
"""Toy data sets by the names the command line uses; each is called as ``f(num_samples, seed=seed)``."""


class DataError(ValueError):
    """A data file that cannot be used, with the place (row, column) and the reason."""


def _size(count: int) -> str:
    """A number of bytes for a message: ``123 bytes``, ``1.5 GiB``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def _read_text(path: Path, max_bytes: int | None) -> str:
    """The text of a .csv/.txt file: UTF-8 (with or without a byte-order mark), no NUL bytes."""
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise DataError(
            f"{path}: a text table of {_size(size)} is over the limit of {_size(max_bytes)}; convert it once with "
            f"`flowforge convert {path} TABLE.npy` (read a batch at a time, without parsing)"
        )
    raw = path.read_bytes()
    if b"\0" in raw:
        raise DataError(f"{path}: holds binary data (NUL bytes); expected comma-separated numbers as UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); expected a UTF-8 "
            ".csv/.txt file (re-save it as UTF-8)"
        ) from None


def _parse_csv(path: Path, delimiter: str, max_bytes: int | None) -> tuple[list[str] | None, list[list[str]]]:
    text = _read_text(path, max_bytes)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows = [row for row in reader if row and any(cell.strip() for cell in row)]
    except csv.Error as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    header = rows[0] if is_header(rows[0]) else None
    return ([cell.strip() for cell in header] if header else None), (rows[1:] if header else rows)


MISSING_VALUES = ("", "na", "nan", "null", "none")
"""Cells of a text table that mean a missing value (compared stripped and in lower case)."""


def is_number(cell: str) -> bool:
    """Whether a cell of a text table reads as a number (``float``'s rules)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def is_header(cells: list[str]) -> bool:
    """Whether the first row of a text table is its header: a cell that is neither a number nor a missing
    value (a first data row with a missing value is data, and its missing value an error)."""
    return any(not is_number(cell) and cell.strip().lower() not in MISSING_VALUES for cell in cells)


def _check_values(values: np.ndarray, names: list[str], path: Path, first_row: int) -> None:
    """Reject missing, non-finite values, naming the first offending row (as in the file) and column."""
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        what = (
            "a missing value (NaN)" if np.isnan(values[row, column]) else f"the non-finite value {values[row, column]}"
        )
        raise DataError(f"{path}: row {row + first_row}, column {names[column]!r}: {what}")


def _array_header(handle: Any, where: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """The shape, dtype and whether the values are in Fortran order, from the header of a ``.npy``
    stream, read without its data (the stream is left at the data's start)."""
    try:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read(handle)
    except (ValueError, EOFError) as error:
        raise DataError(f"{where}: cannot read as a NumPy file ({error})") from None
    return shape, dtype, fortran_order


def _check_array_size(
    where: str, shape: tuple[int, ...], dtype: np.dtype, available: int, max_bytes: int | None
) -> None:
    """Refuse an array header that asks for more bytes than the file holds (or than ``max_bytes``),
    before anything is allocated, and arrays of Python objects (which would need unpickling)."""
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects (dtype {dtype}); expected an array of numbers")
    needed = math.prod(shape) * dtype.itemsize
    if needed > available:
        raise DataError(
            f"{where}: its header claims an array of shape {shape} and dtype {dtype} ({_size(needed)}), but the file "
            f"holds {_size(available)} of data; the file is damaged or not what it claims"
        )
    if max_bytes is not None and needed > max_bytes:
        raise DataError(f"{where}: an array of {_size(needed)} is over the limit of {_size(max_bytes)}")


def load_array(path: str | os.PathLike[str], key: str | None = None, max_bytes: int | None = None) -> np.ndarray:
    """The array of numbers in a ``.npy`` file, or in a ``.npz`` file the one named ``key`` (which
    may be left out when it holds one).

    Nothing is unpickled, and the header is checked before the data are read: an array larger than
    the file (or than ``max_bytes``) or of Python objects is refused without allocating it. Arrays
    that are not real numbers (strings, booleans, dates, complex numbers) raise :class:`DataError`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.exists() and not path.is_file():  # a folder, or a FIFO whose open would wait for a writer
        raise DataError(f"{path}: not a regular file; expected a .npy or .npz file")
    try:
        if suffix == ".npy":
            with open(path, "rb") as handle:
                shape, dtype, _ = _array_header(handle, str(path))
                _check_array_size(str(path), shape, dtype, os.fstat(handle.fileno()).st_size - handle.tell(), max_bytes)
            values = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            values = _load_npz_member(path, key, max_bytes)
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r}; expected .npy or .npz")
    except DataError:
        raise
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot read as a NumPy file ({error})") from None
    if np.issubdtype(values.dtype, np.complexfloating):
        raise DataError(f"{path}: holds complex numbers (dtype {values.dtype}); expected real numbers")
    if not np.issubdtype(values.dtype, np.number):
        raise DataError(f"{path}: expected a numeric array, got dtype {values.dtype}")
    return values


def _load_npz_member(path: Path, key: str | None, max_bytes: int | None) -> np.ndarray:
    with zipfile.ZipFile(path) as archive:
        members = {name.removesuffix(".npy"): name for name in archive.namelist()}  # NumPy's own naming
        available = list(members)
        if key is None and len(available) != 1:
            raise DataError(f"{path}: holds arrays {available}; name one with key")
        if key is not None and key not in available:
            raise DataError(f"{path}: no array {key!r}; it holds {available}")
        name = key if key is not None else available[0]
        info = archive.getinfo(members[name])
        where = f"{path}, array {name!r}"
        with archive.open(info) as member:
            shape, dtype, _ = _array_header(member, where)
            _check_array_size(where, shape, dtype, info.file_size - member.tell(), max_bytes)
    with np.load(path, allow_pickle=False) as arrays:
        return arrays[name]


def load_table(
    path: str | os.PathLike[str],
    columns: list[str | int] | None = None,
    key: str | None = None,
    delimiter: str = ",",
    max_bytes: int | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Read a numeric table from ``.csv``/``.txt`` (UTF-8; header detected, :func:`is_header`), ``.npy``
    or ``.npz`` (``key`` names the array when there are several; read by
    :func:`load_array`).

    ``columns`` selects columns by name or index. Returns a float64 tensor ``(rows, columns)`` and
    the column names. Missing, non-numeric or infinite values raise :class:`DataError` naming the
    row (1-based, as in the file) and the column; so do files that cannot be read (not UTF-8 or
    binary text, damaged arrays, complex numbers, ``max_bytes`` exceeded by a text file's size or an
    array's data).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a .csv, .txt, .npy or .npz file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    first_row = 1
    if suffix in (".csv", ".txt"):
        try:
            header, rows = _parse_csv(path, delimiter, max_bytes)
        except OSError as error:
            raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
        width = len(header) if header else len(rows[0])
        names = header or [f"x{i + 1}" for i in range(width)]
        first_row = 2 if header else 1
        values = np.empty((len(rows), width))
        for index, row in enumerate(rows):
            if len(row) != width:
                raise DataError(f"{path}: row {index + first_row} has {len(row)} fields, expected {width}")
            for column, cell in enumerate(row):
                text = cell.strip()
                if text.lower() in MISSING_VALUES:
                    raise DataError(f"{path}: row {index + first_row}, column {names[column]!r}: missing value")
                try:
                    values[index, column] = float(text)
                except ValueError:
                    raise DataError(
                        f"{path}: row {index + first_row}, column {names[column]!r}: {text!r} is not a number"
                    ) from None
    elif suffix in (".npy", ".npz"):
        values = np.asarray(load_array(path, key, max_bytes), dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise DataError(f"{path}: expected a 2-D array (rows, columns), got shape {values.shape}")
        names = [f"x{i + 1}" for i in range(values.shape[1])]
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected .csv, .txt, .npy or .npz")
    if values.shape[0] == 0:
        raise DataError(f"{path}: no data rows")
    _check_values(values, names, path, first_row)
    if columns is not None:
        selected: list[int] = []
        for wanted in columns:
            if isinstance(wanted, int) and -len(names) <= wanted < len(names):
                selected.append(wanted % len(names))
            elif isinstance(wanted, str) and wanted in names:
                selected.append(names.index(wanted))
            else:
                raise DataError(f"{path}: no column {wanted!r}; columns are {names}")
        values, names = values[:, selected], [names[i] for i in selected]
    return torch.from_numpy(values), names


@overload
def split(
    data: torch.Tensor, fractions: tuple[float, float, float] = ..., seed: int = ...
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@overload
def split(
    data: tuple[torch.Tensor, ...], fractions: tuple[float, float, float] = ..., seed: int = ...
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]: ...


def split(
    data: torch.Tensor | tuple[torch.Tensor, ...],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[Any, Any, Any]:
    """Shuffle the rows (seeded) and cut them into train, validation and test parts.

    ``data`` may be a tuple of tensors with the same number of rows (data and labels, data and
    context): each part is then a tuple, cut with the same permutation. A
    :class:`~flowforge.streaming.LazyRows` (rows read on demand) is cut into views of the same rows,
    each part's rows in file order (so that reading a part runs through the file once).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    tensors = data if isinstance(data, tuple) else (data,)
    rows = tensors[0].shape[0]
    if any(t.shape[0] != rows for t in tensors):
        raise ValueError(f"split needs tensors with the same number of rows, got {[t.shape[0] for t in tensors]}")
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    n_train = int(round(fractions[0] * rows))
    n_validation = int(round(fractions[1] * rows))
    if n_train == 0:
        raise ValueError(f"{rows} rows leave no training data with fractions {fractions}")
    bounds = ((0, n_train), (n_train, n_train + n_validation), (n_train + n_validation, rows))
    train, validation, test = (tuple(_part(t, order[a:b]) for t in tensors) for a, b in bounds)
    if isinstance(data, tuple):
        return train, validation, test
    return train[0], validation[0], test[0]


def _part(data: Any, rows: torch.Tensor) -> Any:
    """The rows ``rows`` of a tensor, or the view of them in file order of rows read on demand (anything
    with a ``subset`` method: :class:`~flowforge.streaming.LazyRows`, a layer above this one)."""
    return data.subset(np.sort(rows.numpy())) if hasattr(data, "subset") else data[rows]


def dequantize(data: torch.Tensor, levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation of integer levels ``k ∈ {0, …, levels−1}``: ``(k + u)/levels`` with
    ``u ~ U[0, 1)`` elementwise (drawn on the CPU from ``generator``, so seeded draws do not depend
    on the device), in ``[0, 1)``."""
    if not ((data >= 0) & (data <= levels - 1) & (data == data.round())).all():
        raise ValueError(f"dequantize expects integer levels in [0, {levels - 1}]")
    noise = torch.rand(data.shape, generator=generator, dtype=data.dtype if data.is_floating_point() else None)
    return (data + noise.to(data.device)) / levels


def binarize(data: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic binarisation of intensities in ``[0, 1]``: each value becomes 1 with that probability
    (uniforms drawn on the CPU from ``generator``), as is usual for Bernoulli VAEs on grey images."""
    if not data.is_floating_point() or not ((data >= 0) & (data <= 1)).all():
        raise ValueError("binarize expects floating-point intensities in [0, 1]")
    noise = torch.rand(data.shape, generator=generator, dtype=data.dtype)
    return (noise.to(data.device) < data).to(data.dtype)


MISSING_SCIKIT_LEARN = (
    'the bundled data sets (digits, wine, breast-cancer) need scikit-learn: pip install "flowforge[data]"'
)
"""The one-line message of the :class:`ImportError` raised when a bundled data set needs scikit-learn."""


def _sklearn_datasets() -> ModuleType:
    try:
        from sklearn import datasets
    except ImportError as error:
        raise ImportError(MISSING_SCIKIT_LEARN, name=error.name) from None
    return datasets


DIGITS_LEVELS = 17
"""Grey levels of the digits images (0 … 16)."""


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8×8 handwritten digits (UCI; 1797 images, no download): images as
    ``(1797, 1, 8, 8)`` float64 integer grey levels ``0 … 16`` (:data:`DIGITS_LEVELS` levels) and
    labels ``(1797,)`` (int64, 0–9)."""
    bunch = _sklearn_datasets().load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float64)).unsqueeze(1)
    return images, torch.from_numpy(bunch.target.astype(np.int64))


def load_real_table(name: str) -> tuple[torch.Tensor, list[str]]:
    """A real tabular data set bundled with scikit-learn (no download), as float64 ``(rows, columns)``
    and the column names: ``"wine"`` (178 × 13, chemical analysis of Italian wines) or
    ``"breast-cancer"`` (569 × 30, features of cell nuclei from breast-mass images)."""
    loaders = {"wine": "load_wine", "breast-cancer": "load_breast_cancer"}
    if name not in loaders:
        raise ValueError(f"unknown real data set {name!r}; choose from {sorted(loaders)}")
    bunch = getattr(_sklearn_datasets(), loaders[name])()
    return torch.from_numpy(bunch.data.astype(np.float64)), [str(n) for n in bunch.feature_names]


REAL_TABLES = ("wine", "breast-cancer")
"""Names of the bundled real tables (:func:`load_real_table`)."""
