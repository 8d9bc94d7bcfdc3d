"""Data larger than memory: peak memory and throughput of ``flowforge fit --data FILE.npy`` with the file
read into memory and read a batch at a time (``--stream``), on files of several sizes.

Each file holds ``rows`` rows of a 16-D Gaussian mixture in float32. The run fits a MAF (4 layers, MADE
2x64) for one epoch on ``--train-rows`` rows (batch 1024), validates on 1% of the file, evaluates the
test NLL on the rest (so every row of the file is read) and writes 100,000 samples. While it runs, the
command's ``/proc/PID/status`` is read every 20 ms; the peaks printed are those of

- ``RssAnon``: the process's own memory (tensors, arrays, the interpreter): what grows with the file
  when the table is read into memory;
- ``RssFile``: pages of files mapped into the process (the libraries; ``--stream`` reads the table with
  ``pread`` and maps none of it);
- ``VmRSS``: their sum, what ``top`` shows as RES.

Training throughput is the training rows over the fit's ``train_time_s`` (``metrics.json``); the wall
time is the whole command (reading, checks, whitening statistics, fit, test NLL, samples, pictures). A
first table measures reading scattered batches of 1024 rows alone: from a tensor, from a memory map of
the file (``np.load(mmap_mode="r")``) and by :class:`flowforge.streaming.RowFile` (``--stream``), with
the growth of the process's resident memory over those reads.

    python -m benchmarks.streaming                          # 4M and 16M rows (244 MiB, 977 MiB files)
    python -m benchmarks.streaming --rows 1000000,40000000  # a 2.4 GiB file: --stream only (over 1 GiB)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

COLUMNS = 16
FIELDS = ("VmRSS", "RssAnon", "RssFile")


def write_table(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` rows of a 16-D mixture of 8 Gaussians, float32, written a million rows at a time."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((8, COLUMNS))
    table = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, COLUMNS))
    for start in range(0, rows, 1_000_000):
        count = min(1_000_000, rows - start)
        table[start : start + count] = centres[rng.integers(0, 8, count)] + rng.standard_normal((count, COLUMNS))
    table.flush()
    del table


def _status(pid: int) -> dict[str, int] | None:
    """The memory fields of ``/proc/PID/status`` in bytes, or None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            values[name] = int(rest.split()[0]) * 1024
    return values if len(values) == len(FIELDS) else None


def measured(command: list[str]) -> tuple[dict[str, int], float, str]:
    """Run ``command``; the peaks of its memory fields, its wall time and its output."""
    peaks = dict.fromkeys(FIELDS, 0)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    reader.start()
    while process.poll() is None:
        values = _status(process.pid)
        if values is not None:
            for name in FIELDS:
                peaks[name] = max(peaks[name], values[name])
        time.sleep(0.02)
    reader.join()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{''.join(output)}")
    return peaks, wall, "".join(output)


def _resident() -> int:
    """This process's VmRSS in bytes."""
    values = _status(os.getpid())
    return 0 if values is None else values["VmRSS"]


def gather_rates(path: Path, batches: int = 300) -> dict[str, tuple[float, int]]:
    """Rows per second of reading scattered batches of 1024 rows, and the growth of the process's resident
    memory over the reads: from a tensor, from a memory map, and by ``RowFile`` (``--stream``)."""
    from flowforge.streaming import LazyRows

    generator = torch.Generator().manual_seed(0)
    rows = np.load(path, mmap_mode="r").shape[0]
    indices = [torch.randint(rows, (1024,), generator=generator) for _ in range(batches)]
    rates = {}
    for name in ("tensor", "memory map", "RowFile (--stream)"):
        if name == "tensor":
            in_memory = torch.from_numpy(np.load(path)).double()
            read = in_memory.__getitem__
        else:
            read = (LazyRows(np.load(path, mmap_mode="r")) if name == "memory map" else LazyRows.open(path)).take
        start_resident = _resident()
        for index in indices[:20]:
            read(index)  # warm: the file in the page cache
        start = time.perf_counter()
        for index in indices:
            read(index)
        rates[name] = (batches * 1024 / (time.perf_counter() - start), max(_resident() - start_resident, 0))
        del read
        if name == "tensor":
            del in_memory
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="4000000,16000000", help="rows of each file, comma-separated")
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--folder", default=None, help="where to write the files (default: a temporary folder)")
    parser.add_argument("--modes", default="memory,stream", help="memory, stream or both (comma-separated)")
    args = parser.parse_args()
    if not args.modes or not set(args.modes.split(",")) <= {"memory", "stream"}:
        parser.error(f"--modes takes memory, stream or memory,stream; got {args.modes!r}")
    from flowforge.cli.data import STREAM_BYTES

    folder = Path(args.folder or tempfile.mkdtemp(prefix="flowforge-streaming-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; files in {folder}")
    try:
        sizes = [int(r) for r in args.rows.split(",")]
        first = folder / "rates.npy"
        write_table(first, min(sizes))
        print("\nreading scattered batches of 1024 rows of", first.name, f"({first.stat().st_size / 2**20:.0f} MiB)")
        for name, (rate, grown) in gather_rates(first).items():
            print(f"  {name:<20} {rate / 1e6:6.2f} M rows/s, resident memory grew {grown / 2**20:6.0f} MiB")
        first.unlink()
        print(
            "\n| rows | file | mode | peak RssAnon | peak RssFile | peak VmRSS | training rows/s | wall s | test NLL |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for rows in sizes:
            path = folder / f"table-{rows}.npy"
            write_table(path, rows)
            size = path.stat().st_size
            train = args.train_rows / rows
            split = f"{train:.6f},0.01,{1 - train - 0.01:.6f}"
            modes = [m for m in args.modes.split(",") if m == "stream" or size <= STREAM_BYTES]
            for mode in modes:
                out = folder / f"run-{rows}-{mode}"
                command = [
                    sys.executable, "-m", "flowforge", "fit", "--data", str(path), "--flow", "maf", "--layers", "4",
                    "--hidden", "64", "--epochs", "1", "--batch-size", "1024", "--split", split, "--num-samples",
                    "100000", "--no-progress", "--out", str(out),
                ]  # fmt: skip
                if mode == "stream":
                    command.append("--stream")
                peaks, wall, _ = measured(command)
                metrics = json.loads((out / "metrics.json").read_text())
                rate = metrics["rows"]["train"] / metrics["train_time_s"]
                mib = {name: f"{peaks[name] / 2**20:,.0f} MiB" for name in FIELDS}
                print(
                    f"| {rows:,} | {size / 2**20:,.0f} MiB | {mode} | {mib['RssAnon']} | {mib['RssFile']} | "
                    f"{mib['VmRSS']} | {rate:,.0f} | {wall:.1f} | {metrics['test_nll']:.4f} |",
                    flush=True,
                )
                shutil.rmtree(out)
            path.unlink()
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
