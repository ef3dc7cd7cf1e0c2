"""Debian's Fashion-MNIST as an ImageNet-style folder of JPEGs (the embedded default dataset).

    python tools/fashion_mnist.py OUT [--source /usr/share/datasets/fashion-mnist]

writes OUT/train/<class>/*.JPEG (60,000) and OUT/val/<class>/*.JPEG (10,000), so the demo
runs the same path ImageNet takes. The folder is built under a temporary name and renamed
when complete; an existing complete folder is left alone.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"
# Fashion-MNIST label order (https://github.com/zalandoresearch/fashion-mnist#labels),
# spelled as folder names.
CLASS_NAMES = ("t-shirt_top", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle_boot")
SPLITS = {"train": "train", "val": "t10k"}  # our split name -> IDX file prefix


def read_idx(path: Path) -> np.ndarray:
    """Reads a gzipped IDX file (http://yann.lecun.com/exdb/mnist/) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values for shape {dims}, "
                         f"found {body.size} (truncated file?)")
    return body.reshape(dims)


def load_split(source: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
    if len(images) != len(labels):
        raise ValueError(f"{source}/{prefix}: {len(images)} images but {len(labels)} labels")
    return images, labels


def write_folder(source: Path, out: Path, quality: int = 95) -> dict[str, int]:
    """Writes the folder; returns images written per split."""
    if not source.is_dir():
        raise FileNotFoundError(
            f"{source}: Fashion-MNIST not found; install it with: {INSTALL_HINT}")
    counts = {}
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for split, prefix in SPLITS.items():
        images, labels = load_split(source, prefix)
        for name in CLASS_NAMES:
            (tmp / split / name).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(images, labels)):
            path = tmp / split / CLASS_NAMES[label] / f"{split}_{i:05d}.JPEG"
            Image.fromarray(img, mode="L").save(path, quality=quality)
        counts[split] = len(images)
    tmp.rename(out)
    return counts


def is_complete(out: Path) -> bool:
    expected = {"train": 60000, "val": 10000}
    return all(sum(1 for _ in (out / s).glob("*/*.JPEG")) == n for s, n in expected.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="output folder (gets train/ and val/)")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                   help=f"folder with the IDX .gz files (default {DEFAULT_SOURCE})")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    args = p.parse_args(argv)
    if args.out.exists():
        if is_complete(args.out):
            print(f"{args.out}: complete Fashion-MNIST folder already there, kept")
            return 0
        print(f"error: {args.out} exists but is not a complete Fashion-MNIST folder; "
              "remove it or choose another OUT", file=sys.stderr)
        return 1
    try:
        counts = write_folder(args.source, args.out, args.quality)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: " + ", ".join(f"{s} {n} images" for s, n in counts.items())
          + f" in {len(CLASS_NAMES)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
