"""Shared fixtures: seeded synthetic image folders and tiny beton sets."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools import write_beton
from tools.synthetic import make_folder, textured_image


def write_odd_files(class_dir: Path, rng: np.random.Generator) -> dict[str, str]:
    """The odd-but-decodable files ImageNet-1k really contains, plus unreadable ones.
    Returns {file name: "ok" | "bad"}."""
    class_dir.mkdir(parents=True, exist_ok=True)
    rgb = textured_image(rng, 40, 30, 1)
    Image.fromarray(rgb).convert("CMYK").save(class_dir / "cmyk.JPEG", quality=95)
    Image.fromarray(rgb).save(class_dir / "png_named.JPEG", format="PNG")
    Image.fromarray(rgb).convert("L").save(class_dir / "grey.JPEG", quality=95)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(class_dir / "palette.png", transparency=0)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # a transparent corner: must come out white
    Image.fromarray(rgba, "RGBA").save(class_dir / "rgba.png")
    deep = (rgb[..., 0].astype(np.uint16) * 257)
    Image.fromarray(deep).save(class_dir / "deep16.png")  # mode I;16
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise on display
    rotated.save(class_dir / "exif_rotated.JPEG", exif=exif, quality=95)
    (class_dir / "empty.JPEG").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(textured_image(rng, 64, 48, 2)).save(buf, format="JPEG", quality=90)
    (class_dir / "truncated.JPEG").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (class_dir / "notes.JPEG").write_text("this is not an image\n")
    (class_dir / ".hidden.JPEG").write_bytes(buf.getvalue())
    return {"cmyk.JPEG": "ok", "png_named.JPEG": "ok", "grey.JPEG": "ok", "palette.png": "ok",
            "rgba.png": "ok", "deep16.png": "ok", "exif_rotated.JPEG": "ok",
            "empty.JPEG": "bad", "truncated.JPEG": "bad", "notes.JPEG": "bad"}


def write_set(src: Path, out: Path, resolutions=(16, 32), **kw) -> dict:
    """Runs the writer as the CLI would (one worker: fast start on 2 cores)."""
    opts = dict(splits=["train", "val"], workers=1, quality=90, raw_max_res=16,
                max_per_class=None, max_bad_fraction=0.001, seed=0)
    opts.update(kw)
    return write_beton.run(src, out, list(resolutions), **opts)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """3 classes; train 8 images per class, val 4; about 40x30 px."""
    root = tmp_path_factory.mktemp("tiny_folder")
    return make_folder(root, n_classes=3, per_class=8, size=(40, 30), splits={"val": 4}, seed=1)


@pytest.fixture(scope="session")
def tiny_betons(tiny_folder, tmp_path_factory) -> Path:
    """A beton set of tiny_folder at resolutions 16 (raw) and 32 (jpg), with manifest.json."""
    out = tmp_path_factory.mktemp("tiny_betons")
    write_set(tiny_folder, out, resolutions=(16, 32))
    return out


@pytest.fixture(scope="session")
def warm(tiny_betons):
    """Compile FFCV's pipelines once (Numba JIT, in-process cache) so timed tests time training only."""
    from pipeline.data import BetonSet
    bs = BetonSet(tiny_betons)
    for split, size in (("train", 16), ("val", 32)):
        for _ in bs.loader(split, batch_size=8, output_size=size, num_workers=1):
            pass
    return tiny_betons
