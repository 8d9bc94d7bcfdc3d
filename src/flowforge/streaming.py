"""Tables larger than memory: rows of a ``.npy`` file read a batch at a time.

:class:`LazyRows` is a view of a 2-D array of numbers that stays where it is: a ``.npy`` file opened
by :meth:`LazyRows.open` (read by :class:`RowFile`), or any NumPy array, e.g. a memory map: a selection
of its rows and columns and a transform applied to every batch read. :func:`~flowforge.training.fit_data`
and :func:`~flowforge.metrics.nll_per_row` take one wherever they take a tensor, and read only the rows
of the current batch, so the memory a fit holds is bounded by the batch and the row numbers (8 bytes a
row for the shuffled order and the splits), not by the file's values. :func:`moments` gives the mean and
covariance in one streaming pass in float64, and :func:`csv_to_npy` converts a CSV table once into a
``.npy`` file (``flowforge convert``).
"""

from __future__ import annotations

import csv
import math
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .datasets import MISSING_VALUES, DataError, _array_header, _check_array_size, is_header, is_number
from .utils.files import atomic_path

CHUNK_ROWS = 65536
"""Rows read at a time by the streaming passes (:meth:`LazyRows.chunks`, :func:`moments`)."""
Transform = Callable[[torch.Tensor], torch.Tensor]


class LazyRows:
    """Rows of a 2-D array of real numbers read on demand, as float64 tensors.

    ``array`` is a :class:`RowFile` (:meth:`open`) or a NumPy array (a memory map works, but the pages
    it touches count in the process's resident memory: see :class:`RowFile`). ``rows`` (the array's row
    numbers, any order) and ``columns`` select a part of it; ``transform``
    maps every batch read (a float64 CPU tensor of rows) to what the caller trains on, e.g. whitened
    rows on the model's device. A view never copies the array: :meth:`take` reads the rows asked for
    (in file order, then put back in the order asked), :meth:`chunks` reads consecutive ones.

    >>> rows = LazyRows(np.arange(12.0).reshape(6, 2))
    >>> rows.shape
    (6, 2)
    >>> rows.take(torch.tensor([4, 1]))
    tensor([[8., 9.],
            [2., 3.]], dtype=torch.float64)
    >>> rows.subset(np.array([5, 0])).select([1]).take(torch.tensor([0]))
    tensor([[11.]], dtype=torch.float64)
    """

    def __init__(
        self,
        array: np.ndarray | RowFile,
        rows: np.ndarray | None = None,
        columns: Sequence[int] | None = None,
        transform: Transform | None = None,
    ) -> None:
        if not isinstance(array, np.ndarray | RowFile) or len(array.shape) != 2:
            raise ValueError(f"LazyRows needs a 2-D NumPy array (rows, columns), got {_describe(array)}")
        if np.dtype(array.dtype).kind not in "iuf":
            raise ValueError(f"LazyRows needs an array of real numbers, got dtype {array.dtype}")
        self.array = array
        self.rows = None if rows is None else _row_numbers(rows, array.shape[0])
        self.columns = None if columns is None else [int(c) for c in columns]
        if self.columns is not None and not all(0 <= c < array.shape[1] for c in self.columns):
            raise ValueError(f"columns {self.columns} out of range for {array.shape[1]} columns")
        self.transform = transform
        self._moments: tuple[torch.Tensor, torch.Tensor] | None = None
        """:func:`moments` of this view, once computed (a view does not change)"""

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> LazyRows:
        """The rows of the ``.npy`` file ``path`` (a 1-D array is one column), read on demand by
        :class:`RowFile`. The header is checked first (an array larger than the file, of Python objects or
        not of real numbers raises :class:`~flowforge.datasets.DataError`), and so is every value, in one
        streaming pass: a missing or infinite value is an error naming its row (1-based) and column."""
        rows = cls(RowFile(path))
        bad = rows.first_non_finite()
        if bad is not None:
            row, column, value = bad
            what = "a missing value (NaN)" if math.isnan(value) else f"the non-finite value {value}"
            raise DataError(f"{path}: row {row + 1}, column 'x{column + 1}': {what}")
        return rows

    def __len__(self) -> int:
        return self.array.shape[0] if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the view (before the transform)."""
        return len(self), self.array.shape[1] if self.columns is None else len(self.columns)

    def __repr__(self) -> str:
        return f"LazyRows(shape={self.shape}, dtype={self.array.dtype})"

    def _file_rows(self, index: np.ndarray) -> np.ndarray:
        return index if self.rows is None else self.rows[index]

    def _read(self, file_rows: np.ndarray | slice) -> torch.Tensor:
        """The rows ``file_rows`` of the array (increasing, or a slice), selected columns, float64, transformed."""
        block = self.array[file_rows]
        if self.columns is not None:
            block = block[:, self.columns]
        values = torch.from_numpy(np.array(block, dtype=np.float64))
        return values if self.transform is None else self.transform(values)

    def take(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        """The rows ``index`` of the view (in that order), read from the array in increasing file order."""
        wanted = _row_numbers(index, len(self))
        file_rows = self._file_rows(wanted)
        order = np.argsort(file_rows, kind="stable")
        values = self._read(file_rows[order])
        back = torch.from_numpy(np.argsort(order, kind="stable")).to(values.device)
        return values[back]

    def chunks(self, size: int = CHUNK_ROWS) -> Iterator[torch.Tensor]:
        """The view's rows in order, ``size`` at a time."""
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            if self.rows is None:
                yield self._read(slice(start, stop))
            else:
                yield self.take(np.arange(start, stop))

    def subset(self, rows: torch.Tensor | np.ndarray | Sequence[int]) -> LazyRows:
        """The view of the rows ``rows`` of this one (its row numbers, in that order)."""
        rows = self._file_rows(_row_numbers(rows, len(self)))
        return type(self)(self.array, rows, self.columns, self.transform)

    def select(self, columns: Sequence[int]) -> LazyRows:
        """The view of the columns ``columns`` of this one."""
        if self.transform is not None:
            raise ValueError("select the columns before mapping the rows")
        width = self.shape[1]
        wanted = [int(c) for c in columns]
        if not all(0 <= c < width for c in wanted):
            raise ValueError(f"columns {wanted} out of range for a view of {width} columns")
        chosen = wanted if self.columns is None else [self.columns[c] for c in wanted]
        return type(self)(self.array, self.rows, chosen)

    def map(self, transform: Transform) -> LazyRows:
        """The view whose batches are ``transform`` of this one's."""
        inner = self.transform
        composed = transform if inner is None else (lambda values: transform(inner(values)))
        return type(self)(self.array, self.rows, self.columns, composed)

    def to_tensor(self) -> torch.Tensor:
        """All the view's rows in memory (for a small part of a large file)."""
        return torch.cat(list(self.chunks()))

    def first_non_finite(self) -> tuple[int, int, float] | None:
        """``(row, column, value)`` of the first missing or infinite value (0-based, in the view), or None."""
        for start, values in zip(range(0, len(self), CHUNK_ROWS), self.chunks(), strict=True):
            bad = ~torch.isfinite(values)
            if bad.any():
                row, column = (int(i) for i in torch.nonzero(bad)[0])
                return start + row, column, float(values[row, column])
        return None


Rows = torch.Tensor | LazyRows
"""Rows in memory (a tensor) or read on demand (:class:`LazyRows`)."""


class RowFile:
    """The rows of a ``.npy`` file read with ``pread`` when asked for: ``rows[i:j]`` and ``rows[sorted
    row numbers]`` return NumPy arrays, each run of consecutive rows one read, and nothing of the file
    stays in the process. A memory map (``np.load(mmap_mode="r")``) would do the same reads, but every
    page it touches counts in the process's resident memory, and on Linux a page fault maps the whole
    folio around the page: 1,024 scattered rows of a 1 GB file mapped 780 MB. Reading the same rows here
    took 1.4 ms, and the page cache of the operating system still holds what was read.

    The file must hold a C-ordered array (what ``np.save`` writes for a C-contiguous array); where the
    system has no ``pread`` (Windows), the file is memory-mapped instead.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        if path.suffix.lower() != ".npy":
            raise DataError(
                f"{path}: only .npy files are read a batch at a time (convert a CSV with `flowforge convert`)"
            )
        if not path.is_file():
            raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
        try:
            with open(path, "rb") as handle:
                shape, dtype, fortran_order = _array_header(handle, str(path))
                offset = handle.tell()
                _check_array_size(str(path), shape, dtype, os.fstat(handle.fileno()).st_size - offset, None)
        except OSError as error:
            raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
        if np.dtype(dtype).kind not in "iuf":
            raise DataError(f"{path}: expected an array of real numbers, got dtype {dtype}")
        if len(shape) not in (1, 2):
            raise DataError(f"{path}: expected a 2-D array (rows, columns), got shape {shape}")
        if math.prod(shape) == 0:
            raise DataError(f"{path}: no data rows" if shape[0] == 0 else f"{path}: no columns")
        if fortran_order and len(shape) == 2 and shape[1] > 1:
            raise DataError(
                f"{path}: the array is stored column by column (Fortran order), so a row is scattered over the file; "
                "save it row by row: numpy.save(path, numpy.ascontiguousarray(array))"
            )
        self.path, self.offset, self.dtype = path, offset, np.dtype(dtype)
        self.shape: tuple[int, int] = (shape[0], shape[1] if len(shape) == 2 else 1)
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self._mapped = None if hasattr(os, "pread") else np.load(path, mmap_mode="r").reshape(self.shape)
        self._descriptor = os.open(path, os.O_RDONLY) if self._mapped is None else -1
        if self._descriptor >= 0:
            weakref.finalize(self, os.close, self._descriptor)

    def __repr__(self) -> str:
        return f"RowFile({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        if self._mapped is not None:
            return np.asarray(self._mapped[rows])
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.shape[0])
            if step != 1:
                raise ValueError("RowFile reads consecutive rows (a slice without a step) or sorted row numbers")
            starts, ends = np.array([start]), np.array([max(start, stop)])
        else:
            numbers = np.asarray(rows, dtype=np.int64)
            if numbers.size == 0:
                return np.empty((0, self.shape[1]), self.dtype)
            if numbers.ndim != 1 or numbers.min() < 0 or numbers.max() >= self.shape[0] or (np.diff(numbers) < 0).any():
                raise IndexError(
                    f"RowFile reads increasing row numbers in [0, {self.shape[0]}), got {numbers.size} from "
                    f"{numbers.min()} to {numbers.max()}"
                )
            breaks = np.flatnonzero(np.diff(numbers) != 1) + 1
            starts, ends = numbers[np.r_[0, breaks]], numbers[np.r_[breaks - 1, numbers.size - 1]] + 1
        return self._read_runs(starts.tolist(), ends.tolist())

    def _read_runs(self, starts: list[int], ends: list[int]) -> np.ndarray:
        """Rows ``starts[k] .. ends[k] − 1`` for every ``k``, one after the other."""
        sizes = [(end - start) * self.row_bytes for start, end in zip(starts, ends, strict=True)]
        buffer = bytearray(sum(sizes))
        view, at = memoryview(buffer), 0
        for start, size in zip(starts, sizes, strict=True):
            position = self.offset + start * self.row_bytes
            while size:  # pread may return fewer bytes than asked
                done = os.preadv(self._descriptor, [view[at : at + size]], position) if _PREADV else 0
                if not _PREADV:
                    chunk = os.pread(self._descriptor, size, position)
                    view[at : at + len(chunk)], done = chunk, len(chunk)
                if done == 0:
                    raise OSError(f"{self.path}: the file ended before the rows its header claims (was it replaced?)")
                at, position, size = at + done, position + done, size - done
        return np.frombuffer(buffer, self.dtype).reshape(-1, self.shape[1])


_PREADV = hasattr(os, "preadv")


def _describe(value: object) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else type(value).__name__


def _row_numbers(index: torch.Tensor | np.ndarray | Sequence[int], rows: int) -> np.ndarray:
    numbers = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
    if numbers.ndim != 1 or not (numbers.size == 0 or np.issubdtype(numbers.dtype, np.integer)):
        raise ValueError(f"row numbers must be a 1-D array of integers, got {_describe(numbers)} of {numbers.dtype}")
    numbers = numbers.astype(np.int64, copy=False)
    if numbers.size and (numbers.min() < 0 or numbers.max() >= rows):
        raise IndexError(f"row numbers must lie in [0, {rows}), got values from {numbers.min()} to {numbers.max()}")
    return numbers


def as_rows(values: torch.Tensor | np.ndarray | LazyRows, name: str) -> Rows:
    """What the fits and metrics take: a tensor or a :class:`LazyRows` as it is; a 2-D NumPy array of real
    numbers (a memory map, ``np.load(path, mmap_mode="r")``) as a :class:`LazyRows` read a batch at a
    time (its values as float64); another NumPy array (1-D labels, images) as a tensor in memory."""
    if isinstance(values, torch.Tensor | LazyRows):
        return values
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuf" and values.dtype != np.bool_:
            raise TypeError(f"{name} must hold real numbers, got a NumPy array of dtype {values.dtype}")
        if values.ndim == 2 and values.dtype.kind in "iuf":
            return LazyRows(values)
        return torch.from_numpy(np.array(values))
    raise TypeError(f"{name} must be a tensor, a NumPy array or LazyRows, got {type(values).__name__}")


def take(data: Rows, index: torch.Tensor) -> torch.Tensor:
    """The rows ``index`` of a tensor or of a :class:`LazyRows`."""
    return data.take(index) if isinstance(data, LazyRows) else data[index]


def chunks(data: Rows, size: int = CHUNK_ROWS) -> Iterator[torch.Tensor]:
    """The rows of a tensor or of a :class:`LazyRows` in order, ``size`` at a time."""
    return data.chunks(size) if isinstance(data, LazyRows) else iter(data.split(size))


def all_finite(data: Rows) -> bool:
    """Whether every value of a tensor or a :class:`LazyRows` is finite (one streaming pass for the latter)."""
    if isinstance(data, LazyRows):
        return data.first_non_finite() is None
    return bool(torch.isfinite(data).all())


def total(data: Rows) -> float:
    """The sum of all values, in float64 (one streaming pass for a :class:`LazyRows`)."""
    return math.fsum(float(values.double().sum()) for values in chunks(data))


def moments(data: Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean ``(D,)`` and the maximum-likelihood covariance ``(D, D)`` of ``(rows, D)`` data, in float64,
    in one pass over chunks of :data:`CHUNK_ROWS` rows: each chunk's mean and centred sum of squares
    (two passes over the chunk in memory), merged by the pairwise update of Chan, Golub and LeVeque
    (1979), which keeps data far from the origin (an offset of 1e6 with a spread of 1) accurate to
    rounding where ``E[x²] − E[x]²`` would lose it. A :class:`LazyRows` keeps its moments, so that a
    second call reads nothing.

    >>> x = torch.randn(1000, 3, dtype=torch.float64) + 1e6
    >>> mean, covariance = moments(LazyRows(x.numpy()))
    >>> torch.allclose(covariance, torch.cov(x.T, correction=0), rtol=1e-9)
    True
    """
    if isinstance(data, LazyRows) and data._moments is not None:
        return data._moments
    count, mean, scatter = _merged_moments(chunks(data))
    if isinstance(data, LazyRows):
        data._moments = (mean, scatter / count)
    return mean, scatter / count


def mean_and_standard_error(values: Iterable[torch.Tensor]) -> tuple[float, float]:
    """The mean of per-row values given a chunk at a time (e.g. the NLLs of a test set read on demand) and
    its standard error ``s/√n`` (``s`` with Bessel's correction), in float64, without holding them all.

    >>> mean_and_standard_error([torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
    (2.0, 0.5773502691896257)
    """
    count, mean, scatter = _merged_moments(value.reshape(-1, 1) for value in values)
    spread = math.sqrt(float(scatter[0, 0]) / (count - 1)) if count > 1 else math.nan
    return float(mean[0]), spread / math.sqrt(count)


def _merged_moments(parts: Iterable[torch.Tensor]) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(count, mean, centred sum of squares)`` of 2-D chunks, merged pairwise (:func:`moments`)."""
    count, mean, scatter = 0, None, None
    for values in parts:
        values = values.double().cpu()
        n = values.shape[0]
        if values.dim() != 2:
            raise ValueError(f"moments need (rows, features) data, got a chunk of shape {tuple(values.shape)}")
        if n == 0:
            continue
        chunk_mean = values.mean(0)
        centred = values - chunk_mean
        chunk_scatter = centred.T @ centred
        if mean is None or scatter is None:
            count, mean, scatter = n, chunk_mean, chunk_scatter
            continue
        delta = chunk_mean - mean
        merged = count + n
        mean = mean + delta * (n / merged)
        scatter = scatter + chunk_scatter + torch.outer(delta, delta) * (count * n / merged)
        count = merged
    if mean is None or scatter is None:
        raise ValueError("moments need at least one row")
    return count, mean, scatter


def csv_to_npy(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    delimiter: str = ",",
    dtype: type[np.floating] = np.float64,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[tuple[int, int], list[str]]:
    """Convert the numeric table in the CSV file ``source`` into the ``.npy`` file ``target`` of ``dtype``,
    parsing ``chunk_rows`` rows at a time, so that a file larger than memory converts in bounded memory.

    The file is UTF-8; a first row with a cell that is neither a number nor a missing value is the
    header (:func:`~flowforge.datasets.is_header`, as :func:`~flowforge.datasets.load_table` reads it),
    and blank rows are skipped. A missing, non-numeric or infinite value, or a row with another number
    of fields, raises :class:`~flowforge.datasets.DataError` naming its line and column, and leaves no
    ``target``: the ``.npy`` is written under a temporary name beside it (the rows after room for the
    header, which is written last) and renamed into place only when complete. Returns the array's
    shape and the column names (``x1, x2, ...`` without a header)."""
    source, target = Path(source), Path(target)
    if target.suffix.lower() != ".npy":
        raise DataError(f"{target}: the converted table is written as .npy; name the file *.npy")
    if not source.is_file():
        raise DataError(f"{source}: no such file" if not source.exists() else f"{source}: not a regular file")
    dtype_ = np.dtype(dtype)
    descr = np.lib.format.dtype_to_descr(dtype_)
    reserved = len(_npy_header(descr, (10**19, 10**12)))  # room for any shape's header
    with atomic_path(target, durable=True) as npy_path, open(npy_path, "wb") as out:
        out.write(b" " * reserved)
        names, rows = _parse_rows(source, out, delimiter, dtype_, chunk_rows)
        out.seek(0)
        out.write(_npy_header(descr, (rows, len(names)), reserved))
    return (rows, len(names)), names


def _npy_header(descr: Any, shape: tuple[int, int], length: int | None = None) -> bytes:
    """The header of a version-1.0 ``.npy`` file of a C-ordered array, padded with spaces to ``length``
    bytes (by default to the next multiple of 64, as NumPy writes it)."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape})
    size = length if length is not None else -(-(10 + len(text) + 1) // 64) * 64
    padding = size - 10 - len(text) - 1
    if padding < 0:
        raise ValueError(f"a header of {len(text)} characters does not fit in {size} bytes")
    header = (text + " " * padding + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def _parse_rows(source: Path, out: BinaryIO, delimiter: str, dtype: np.dtype, chunk_rows: int) -> tuple[list[str], int]:
    """Parse ``source`` in chunks of rows, appending them to ``out`` as flat ``dtype`` values; returns the
    column names and the number of rows."""
    names: list[str] | None = None
    rows = 0
    try:
        with open(source, encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text, delimiter=delimiter)
            pending: list[tuple[int, list[str]]] = []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                if names is None:
                    if not is_header(cells):
                        names = [f"x{i + 1}" for i in range(len(cells))]
                    else:
                        names = [cell.strip() for cell in cells]
                        continue
                pending.append((reader.line_num, cells))
                if len(pending) == chunk_rows:
                    rows += _write_chunk(source, pending, names, dtype, out)
                    pending = []
            if pending and names is not None:
                rows += _write_chunk(source, pending, names, dtype, out)
    except UnicodeDecodeError as error:
        raise DataError(f"{source}: not UTF-8 text ({error.reason}); re-save it as UTF-8") from None
    except csv.Error as error:
        raise DataError(f"{source}: not a readable CSV file ({error})") from None
    if names is None or rows == 0:
        raise DataError(f"{source}: no data rows")
    return names, rows


def _write_chunk(source: Path, lines: list[tuple[int, list[str]]], names: list[str], dtype: np.dtype, out) -> int:
    """Parse the rows ``lines`` (each with its line number in the file) into finite numbers and append
    them to ``out``; the first bad line and column are named in a :class:`~flowforge.datasets.DataError`."""
    width = len(names)
    for number, cells in lines:
        if len(cells) != width:
            raise DataError(f"{source}: line {number} has {len(cells)} fields, expected {width}")
    try:
        values = np.array([cells for _, cells in lines], dtype=np.float64)
    except ValueError:
        for number, cells in lines:
            for column, cell in enumerate(cells):
                text = cell.strip()
                if text.lower() in MISSING_VALUES:
                    raise DataError(f"{source}: line {number}, column {names[column]!r}: missing value") from None
                if not is_number(text):
                    raise DataError(
                        f"{source}: line {number}, column {names[column]!r}: {text!r} is not a number"
                    ) from None
        raise
    with np.errstate(over="ignore"):  # reported below, with its line
        converted = values.astype(dtype)
    bad = ~(np.isfinite(values) & np.isfinite(converted))
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        value = values[row, column]
        if np.isnan(value):
            what = "missing value (NaN)"
        elif np.isfinite(value):
            what = f"{value} overflows {dtype}"
        else:
            what = f"the non-finite value {value}"
        raise DataError(f"{source}: line {lines[row][0]}, column {names[column]!r}: {what}")
    out.write(converted.tobytes())
    return len(lines)
