"""Run normflows' example notebooks on flowforge, with only the import swapped.

    python tools/run_normflows_notebooks.py PATH/TO/normalizing-flows/examples [--iterations N] [--timeout S]

PATH is the ``examples/`` folder of a checkout of https://github.com/VincentStimper/normalizing-flows
(the notebooks are not in normflows' wheel or sdist, so CI, which has no network beyond package
registries, cannot run this; its results are reported in docs/normflows.md). Each notebook's code
cells run in order, in a fresh Python process, with ``import normflows as nf`` replaced by
``from flowforge.compat import normflows as nf`` (``--import flowforge`` uses ``import flowforge as nf``
instead; ``--import normflows`` runs normflows itself, to tell a notebook's own failures apart) and
nothing else changed, except:

- ``--iterations N`` caps the training loops (``max_iter = …``, ``n_epochs = …``) at N for a quick run,
  and the intervals of their in-loop plots (``show_iter = …``, ``save_iter = …``) too, so those
  branches run; without it the notebooks run at their own sizes;
- normflows itself cannot be imported (except with ``--import normflows``), so nothing runs on it by
  accident;
- MNIST and CIFAR-10 cannot be downloaded here: ``torchvision.datasets.MNIST`` and ``.CIFAR10`` are
  replaced by a small local stand-in built from scikit-learn's bundled 8x8 digits (upscaled to 28x28
  grey or 32x32 colour images), passed through the notebook's own transforms; when torchvision is not
  installed (or does not match torch), a minimal ``torchvision`` with ``transforms.Compose``,
  ``transforms.ToTensor`` and ``utils.make_grid`` stands in too;
- shell and magic lines (``!pip …``, ``%matplotlib …``) are dropped and figures are not shown;
- without a GPU, ``.cuda()`` leaves modules and tensors where they are (one notebook calls it
  unconditionally), and the image notebook, which asks for a picture of your own (``img.png``), gets a
  drawn ring.

Prints one line per notebook (ok or the error that stopped it, with the cell) and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRELUDE = '''
import matplotlib
matplotlib.use("Agg")
from matplotlib import pyplot as _plt
_plt.show = lambda *args, **kwargs: _plt.close("all")

import torch as _torch
if not _torch.cuda.is_available():  # notebooks that call .cuda() unconditionally run on the CPU instead
    _torch.nn.Module.cuda = lambda self, device=None: self
    _torch.Tensor.cuda = lambda self, device=None, non_blocking=False, memory_format=None: self

import os as _os
if not _os.path.exists("img.png"):  # the image notebook asks for a picture of your own: a ring
    import numpy as _np
    _grid = _np.linspace(-1, 1, 128)
    _radius = _np.hypot(*_np.meshgrid(_grid, _grid))
    _ring = _np.where(_np.abs(_radius - 0.6) < 0.15, 0.0, 1.0)  # dark ring on white, as a drawing
    _plt.imsave("img.png", _np.stack([_ring] * 3, axis=-1))

def _install_dataset_stand_ins():
    import sys
    import types

    import numpy as np
    import torch
    from PIL import Image
    from sklearn.datasets import load_digits

    class _Digits:
        """A local stand-in for MNIST / CIFAR-10: sklearn's 8x8 digits upscaled, PIL images and int labels."""

        def __init__(self, root=None, train=True, download=False, transform=None, target_transform=None,
                     size=28, colour=False):
            digits = load_digits()
            half = len(digits.images) * 4 // 5
            images, labels = (digits.images[:half], digits.target[:half]) if train else \\
                (digits.images[half:], digits.target[half:])
            self.images = [(image / 16.0 * 255).astype(np.uint8) for image in images]
            self.labels = [int(label) for label in labels]
            self.transform, self.target_transform = transform, target_transform
            self.size, self.colour = size, colour

        def __len__(self):
            return len(self.images)

        def __getitem__(self, index):
            image = Image.fromarray(self.images[index]).resize((self.size, self.size), Image.BILINEAR)
            if self.colour:
                image = image.convert("RGB")
            label = self.labels[index]
            if self.transform is not None:
                image = self.transform(image)
            if self.target_transform is not None:
                label = self.target_transform(label)
            return image, label

    class MNIST(_Digits):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    class CIFAR10(_Digits):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, size=32, colour=True, **kwargs)

    try:
        import torchvision
    except Exception:  # not installed, or a build that does not match torch: a minimal stand-in
        torchvision = types.ModuleType("torchvision")
        torchvision.datasets = types.ModuleType("torchvision.datasets")
        torchvision.transforms = types.ModuleType("torchvision.transforms")

        class Compose:
            def __init__(self, transforms):
                self.transforms = list(transforms)

            def __call__(self, x):
                for transform in self.transforms:
                    x = transform(x)
                return x

        class ToTensor:
            def __call__(self, image):
                array = np.asarray(image, dtype=np.float32) / 255.0
                array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
                return torch.from_numpy(np.ascontiguousarray(array))

        def make_grid(images, nrow=8, padding=2, normalize=False, pad_value=0.0, **kwargs):
            images = torch.as_tensor(images)
            if normalize:
                images = (images - images.min()) / (images.max() - images.min()).clamp_min(1e-12)
            count, channels, height, width = images.shape
            columns = min(nrow, count)
            rows = -(-count // columns)
            grid = images.new_full((channels, rows * (height + padding) + padding,
                                    columns * (width + padding) + padding), pad_value)
            for index in range(count):
                top = (index // columns) * (height + padding) + padding
                left = (index % columns) * (width + padding) + padding
                grid[:, top : top + height, left : left + width] = images[index]
            return grid

        torchvision.transforms.Compose, torchvision.transforms.ToTensor = Compose, ToTensor
        torchvision.utils = types.ModuleType("torchvision.utils")
        torchvision.utils.make_grid = make_grid
        for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.utils"):
            sys.modules[name] = torchvision if name == "torchvision" else getattr(torchvision, name.split(".")[1])
    torchvision.datasets.MNIST, torchvision.datasets.CIFAR10 = MNIST, CIFAR10

_install_dataset_stand_ins()
'''

IMPORTS = {
    "compat": "from flowforge.compat import normflows as nf",
    "flowforge": "import flowforge as nf",
    "normflows": "import normflows as nf",  # normflows itself, to tell its notebooks' own failures apart
}


def notebook_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


def prepare(source: str, import_line: str, iterations: int | None) -> str:
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("!", "%"))]
    source = "\n".join(lines)
    source = re.sub(r"^(\s*)import normflows as nf\b", lambda m: m[1] + import_line, source, flags=re.M)
    if iterations is not None:
        # the loops, and the intervals of their in-loop plots and logs, so that those run too
        names = r"max_iter|n_epochs|num_iter|show_iter|save_iter|plot_iter|eval_iter"
        source = re.sub(rf"^(\s*(?:{names})\s*=\s*)\d+", lambda m: f"{m[1]}{iterations}", source, flags=re.M)
    return source


def run_notebook(
    path: Path, import_line: str, iterations: int | None, timeout: float, verbose: bool = False
) -> tuple[bool, str, float]:
    cells = [prepare(cell, import_line, iterations) for cell in notebook_cells(path)]
    script = [PRELUDE]
    if "normflows" not in import_line:  # a cell that imported normflows some other way would get the real one
        script.append('import sys as _sys\n_sys.modules["normflows"] = None\n')
    for index, cell in enumerate(cells):
        script.append(f"# --- cell {index}\n_cell = {index}\n{cell}\n")
    with tempfile.TemporaryDirectory() as folder:
        program = Path(folder) / f"{path.stem}.py"
        program.write_text("\n".join(script))
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, str(program)], cwd=folder, capture_output=True, text=True,
                                  timeout=timeout, env={**os.environ, "MPLBACKEND": "Agg"})  # fmt: skip
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f} s", time.perf_counter() - start
        seconds = time.perf_counter() - start
    if done.returncode == 0:
        return True, "ok", seconds
    error = [line for line in done.stderr.strip().splitlines() if line.strip()]
    if verbose:
        print(done.stderr[-4000:], file=sys.stderr)
    # The last traceback line in the generated script tells the cell that stopped.
    lines = re.findall(r'File "' + re.escape(str(program)) + r'", line (\d+)', done.stderr)
    label = ""
    if lines:
        starts = [n + 1 for n, text in enumerate("\n".join(script).splitlines()) if text.startswith("# --- cell ")]
        label = f"cell {sum(first <= int(lines[-1]) for first in starts) - 1}: "
    return False, label + (error[-1] if error else f"exit status {done.returncode}"), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples", type=Path, help="the examples/ folder of a normalizing-flows checkout")
    parser.add_argument("--iterations", type=int, default=None, help="cap training loops at N (default: as written)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per notebook (default 1800)")
    parser.add_argument("--import", dest="import_kind", choices=sorted(IMPORTS), default="compat")
    parser.add_argument("--only", nargs="*", default=None, help="notebook names without .ipynb (default: all)")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of a failing notebook")
    args = parser.parse_args(argv)
    if not args.examples.is_dir():
        parser.error(f"{args.examples} is not a folder; give the examples/ folder of a normalizing-flows checkout")
    if args.iterations is not None and args.iterations < 1:
        parser.error(f"--iterations must be a positive int, got {args.iterations}")
    notebooks = sorted(args.examples.glob("*.ipynb"))
    if args.only:
        notebooks = [path for path in notebooks if path.stem in args.only]
    if not notebooks:
        parser.error(f"no notebooks to run in {args.examples}")
    failed = 0
    for path in notebooks:
        ok, message, seconds = run_notebook(
            path, IMPORTS[args.import_kind], args.iterations, args.timeout, args.verbose
        )
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {path.stem:32s} {seconds:7.1f} s  {message}", flush=True)
    print(f"{len(notebooks) - failed} of {len(notebooks)} notebooks ran")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
