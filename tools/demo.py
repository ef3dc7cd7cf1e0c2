"""The demo on the embedded default dataset (what `make demo` runs).

    python -m tools.demo [--out data/demo]

1. Debian's Fashion-MNIST -> OUT/fashion-mnist/ (ImageNet-style folder of JPEGs)
2. -> OUT/betons/ (train/val betons at 16, 24, 32 px, raw pixels) and their summary
Each step skips what is already complete, so a second run is quick.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tools import fashion_mnist, write_beton

DEMO_RESOLUTIONS = [16, 24, 32]


def build_betons(out: Path, workers: int) -> Path:
    folder, betons = out / "fashion-mnist", out / "betons"
    if fashion_mnist.main([str(folder)]) != 0:
        raise SystemExit(1)
    print(f"\n== betons: {folder} -> {betons}")
    try:
        write_beton.run(folder, betons, DEMO_RESOLUTIONS, ["train", "val"], workers,
                        write_beton.DEFAULT_QUALITY, raw_max_res=max(DEMO_RESOLUTIONS),
                        max_per_class=None, max_bad_fraction=0.001, seed=0)
    except write_beton.WriteError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)
    return betons


def summarize_betons(betons: Path) -> None:
    m = json.loads((betons / "manifest.json").read_text())
    print(f"\n{betons}/manifest.json: {m['num_classes']} classes ({', '.join(m['classes'])})")
    for split, info in m["splits"].items():
        print(f"  {split}: {info['count']} images, {len(info['skipped'])} skipped")
    total = sum(b["bytes"] for b in m["betons"])
    print(f"  {len(m['betons'])} betons, {total / 2**20:.0f} MiB in all")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/demo"))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    print(f"== Fashion-MNIST -> {a.out / 'fashion-mnist'}")
    betons = build_betons(a.out, a.workers)
    summarize_betons(betons)
    return 0


if __name__ == "__main__":
    sys.exit(main())
