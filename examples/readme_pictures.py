"""Make the README's pictures: run `flowforge demo`, keep its comparison and a strip of GIF frames.

python examples/readme_pictures.py            # writes docs/demo-comparison.png, docs/demo-frames.png
"""

import shutil
import sys
from pathlib import Path

from PIL import Image

from flowforge import cli

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "flowforge-demo"
FRAMES = (0, 5, 25, 100)  # iterations 0, 1000, 5000, 20000 at a frame every 200


def main() -> int:
    if cli.main(["demo", "--out", str(RUN), "--no-progress", "--overwrite"]) != 0:
        return 1
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(RUN / "comparison.png", docs / "demo-comparison.png")
    with Image.open(RUN / "training.gif") as gif:
        width, height = gif.size
        strip = Image.new("RGB", (width * len(FRAMES), height))
        for position, frame in enumerate(FRAMES):
            gif.seek(frame)
            strip.paste(gif.convert("RGB"), (position * width, 0))
    strip.save(docs / "demo-frames.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
