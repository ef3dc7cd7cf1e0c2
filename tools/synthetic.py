"""Seeded synthetic ImageNet-style folders: textured JPEGs with a real decode cost.

Used by the tests (small images) and bench/loader.py (about 500x375, quality 90, like
ImageNet's average image). Textures are smooth noise plus stripes per class, so JPEG
sizes and decode times resemble photographs rather than flat colour.
"""
from __future__ import annotations

from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image


def textured_image(rng: np.random.Generator, width: int, height: int, label: int = 0) -> np.ndarray:
    """(height, width, 3) uint8: low-frequency colour noise, class-dependent stripes, grain."""
    coarse = rng.random((max(2, height // 16), max(2, width // 16), 3))
    base = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = 0.3 + 0.6 * label
    stripes = 40 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / (3 + label % 5))
    grain = rng.normal(0, 12, (height, width, 1))
    img = base + stripes[..., None] + grain
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_image(job: tuple) -> None:
    path, seed, w, h, label, quality = job
    Image.fromarray(textured_image(np.random.default_rng(seed), w, h, label)).save(path, quality=quality)


def make_folder(root: Path, n_classes: int, per_class: int, size: tuple[int, int] = (500, 375),
                splits: dict[str, int] | None = None, quality: int = 90, seed: int = 0,
                jitter: float = 0.2, workers: int = 1) -> Path:
    """Writes root/<split>/class_XX/img_XXXXX.JPEG; returns root.

    Args:
        n_classes: class folders per split.
        per_class: images per class in train; splits may override per split ({"val": 2}).
        size: mean (width, height); each image varies by +-jitter.
        workers: processes encoding images (each image has its own seed, so the folder is
            the same for any count).
    """
    rng = np.random.default_rng(seed)
    counts = {"train": per_class, "val": max(1, per_class // 5)}
    counts.update(splits or {})
    jobs = []
    for s, (split, n) in enumerate(counts.items()):
        for c in range(n_classes):
            d = root / split / f"class_{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w = max(8, int(size[0] * (1 + rng.uniform(-jitter, jitter))))
                h = max(8, int(size[1] * (1 + rng.uniform(-jitter, jitter))))
                jobs.append((d / f"img_{i:05d}.JPEG", (seed, s, c, i), w, h, c, quality))
    if workers > 1 and len(jobs) > 1:
        with Pool(workers) as pool:
            pool.map(_write_image, jobs, chunksize=16)
    else:
        for job in jobs:
            _write_image(job)
    return root
