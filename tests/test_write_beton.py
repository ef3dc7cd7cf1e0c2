"""tools/write_beton.py: round trip, messy files, manifest, atomic writes and reruns."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ffcv.reader import Reader
from PIL import Image

from tests.conftest import write_odd_files, write_set
from tools import write_beton
from tools.synthetic import make_folder

ROOT = Path(__file__).resolve().parents[1]


def _field(beton: Path, name: str) -> np.ndarray:
    reader = Reader(str(beton))
    return reader.metadata[f"f{list(reader.handlers).index(name)}"]


def stored_sizes(beton: Path) -> list[tuple[int, int]]:
    meta = _field(beton, "image")
    return [(int(h), int(w)) for h, w in zip(meta["height"], meta["width"])]


def stored_labels(beton: Path) -> np.ndarray:
    return _field(beton, "label").astype(np.int64).ravel()


def read_images(beton: Path, size: int) -> np.ndarray:
    """All images of a beton whose images are all size x size, as (N, size, size, 3)."""
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    loader = Loader(str(beton), batch_size=64, order=OrderOption.SEQUENTIAL, num_workers=1,
                    drop_last=False, pipelines={"image": [SimpleRGBImageDecoder()],
                                                "label": [IntDecoder()]})
    return np.concatenate([np.array(x, copy=True) for x, _ in loader])


# ------------------------------------------------------------------ round trip

def test_round_trip_counts_labels_class_order(tiny_folder, tiny_betons):
    m = json.loads((tiny_betons / "manifest.json").read_text())
    assert m["classes"] == ["class_00", "class_01", "class_02"]
    assert m["splits"]["train"]["count"] == 24 and m["splits"]["val"]["count"] == 12
    assert m["splits"]["train"]["skipped"] == [] and m["tool_version"] == write_beton.TOOL_VERSION
    for split, per_class in (("train", 8), ("val", 4)):
        for res in (16, 32):
            labels = stored_labels(tiny_betons / f"{split}_{res}.beton")
            assert sorted(np.bincount(labels, minlength=3).tolist()) == [per_class] * 3
    # Written in a shuffled order, the same for every resolution of a split.
    train16 = stored_labels(tiny_betons / "train_16.beton")
    assert (train16 == stored_labels(tiny_betons / "train_32.beton")).all()
    assert (np.diff(train16) != 0).sum() > 3, "labels look class-sorted"


def test_manifest_describes_every_beton(tiny_betons):
    m = json.loads((tiny_betons / "manifest.json").read_text())
    assert m["raw_max_res"] == 16 and m["jpeg_quality"] == 90
    got = {(b["split"], b["resolution"]): b for b in m["betons"]}
    assert set(got) == {(s, r) for s in ("train", "val") for r in (16, 32)}
    for (split, res), b in got.items():
        path = tiny_betons / b["path"]
        assert path.name == f"{split}_{res}.beton"
        assert b["bytes"] == path.stat().st_size
        assert b["mode"] == ("raw" if res <= 16 else "jpg")
        assert b["quality"] == (None if b["mode"] == "raw" else 90)
        assert b["count"] == m["splits"][split]["count"]


def test_longest_side_shrunk_never_enlarged(tiny_folder, tiny_betons):
    sources = [Image.open(p).size for p in sorted((tiny_folder / "train").glob("*/*.JPEG"))]
    longest_src = max(max(s) for s in sources)
    assert longest_src < 64
    for h, w in stored_sizes(tiny_betons / "train_16.beton"):
        assert max(h, w) == 16
    for h, w in stored_sizes(tiny_betons / "train_32.beton"):
        assert max(h, w) == 32
    # A resolution above every source size keeps the source size.
    out = tiny_betons.parent / "big"
    write_set(tiny_folder, out, resolutions=(64,), splits=["train"])
    assert sorted(stored_sizes(out / "train_64.beton")) == sorted((h, w) for w, h in sources)


def test_pixels_match_resized_source(tmp_path):
    """Raw betons hold exactly the resized source; JPEG betons within JPEG tolerance."""
    src = make_folder(tmp_path / "src", n_classes=2, per_class=4, size=(48, 48), jitter=0.0,
                      splits={"val": 1}, seed=3)
    out = tmp_path / "out"
    write_set(src, out, resolutions=(24, 40), raw_max_res=24, splits=["train"])
    files = sorted((src / "train").glob("*/*.JPEG"))
    for res, tol in ((24, 0.0), (40, 4.0)):
        want = np.stack([write_beton.load_rgb(f, res) for f in files]).astype(np.float32)
        got = read_images(out / f"train_{res}.beton", res).astype(np.float32)
        labels = stored_labels(out / f"train_{res}.beton")
        # Match each stored image to its source (stored order is shuffled).
        err = np.abs(got[:, None] - want[None]).mean(axis=(2, 3, 4))  # (stored, source)
        match = err.argmin(axis=1)
        assert sorted(match.tolist()) == list(range(len(files))), "not a one-to-one match"
        assert err.min(axis=1).max() <= tol
        assert [int(f.parent.name[-2:]) for f in np.array(files)[match]] == labels.tolist()


# ------------------------------------------------------------------ messy folders

def test_odd_files_converted_and_bad_files_listed(tmp_path):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=4)
    kinds = write_odd_files(src / "train" / "class_01", np.random.default_rng(0))
    (src / "train" / "stray_file.JPEG").write_bytes(b"at class level: ignored")
    out = tmp_path / "out"
    m = write_set(src, out, resolutions=(16,), max_bad_fraction=0.5)
    skipped = {Path(s["path"]).name: s["reason"] for s in m["splits"]["train"]["skipped"]}
    assert set(skipped) == {n for n, k in kinds.items() if k == "bad"}
    assert skipped["empty.JPEG"] == "empty file"
    assert "cannot decode" in skipped["truncated.JPEG"]
    assert "identify" in skipped["notes.JPEG"]
    n_ok = sum(k == "ok" for k in kinds.values())
    assert m["splits"]["train"]["count"] == 6 + n_ok
    assert m["splits"]["train"]["listed"] == 6 + len(kinds)  # hidden and stray not listed


def test_load_rgb_conversions(tmp_path):
    d = tmp_path / "odd"
    write_odd_files(d, np.random.default_rng(0))
    for name in ("cmyk.JPEG", "png_named.JPEG", "grey.JPEG", "palette.png", "rgba.png",
                 "deep16.png", "exif_rotated.JPEG"):
        arr = write_beton.load_rgb(d / name, 64)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
    assert write_beton.load_rgb(d / "exif_rotated.JPEG", 64).shape == (40, 30, 3)  # turned
    assert write_beton.load_rgb(d / "grey.JPEG", 64).shape == (30, 40, 3)
    rgba = write_beton.load_rgb(d / "rgba.png", 64)
    assert (rgba[:10, :10] == 255).all(), "transparent pixels must be white"
    deep = write_beton.load_rgb(d / "deep16.png", 64).astype(int)
    assert deep.max() > 200 and np.array_equal(deep[..., 0], deep[..., 1])
    grey = write_beton.load_rgb(d / "grey.JPEG", 64)
    assert np.array_equal(grey[..., 0], grey[..., 2])
    for name in ("empty.JPEG", "truncated.JPEG", "notes.JPEG"):
        with pytest.raises(ValueError):
            write_beton.load_rgb(d / name, 64)


def test_too_many_bad_files_writes_nothing(tmp_path):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=5)
    write_odd_files(src / "train" / "class_00", np.random.default_rng(1))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "write_beton.py"), str(src), str(out),
                        "--resolutions", "16", "--workers", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "max-bad-fraction" in last and "train" in last
    assert "warning: skipped train/class_00/empty.JPEG: empty file" in r.stderr
    assert not any(out.glob("*.beton")) and not (out / "manifest.json").exists()


def test_the_bad_fraction_limit_is_exact(tmp_path):
    """Exactly --max-bad-fraction unreadable files are allowed; a hair more is not."""
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=5)
    kinds = write_odd_files(src / "train" / "class_00", np.random.default_rng(1))
    frac = sum(k == "bad" for k in kinds.values()) / (6 + len(kinds))
    with pytest.raises(write_beton.WriteError, match="above --max-bad-fraction"):
        write_set(src, tmp_path / "out", resolutions=(16,), splits=["train"], max_bad_fraction=frac * 0.999)
    m = write_set(src, tmp_path / "out", resolutions=(16,), splits=["train"], max_bad_fraction=frac)
    assert m["splits"]["train"]["count"] == 6 + sum(k == "ok" for k in kinds.values())


def test_val_class_missing_from_train_is_an_error(tmp_path):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=2, size=(20, 20), seed=6)
    (src / "val" / "class_99").mkdir()
    with pytest.raises(write_beton.WriteError, match="class_99.*not among the train classes"):
        write_set(src, tmp_path / "out")
    with pytest.raises(write_beton.WriteError, match="missing folder"):
        write_set(tmp_path / "nowhere", tmp_path / "out")


def test_cli_rejects_bad_arguments(tmp_path):
    for args, field in ((["--resolutions", "a,b"], "--resolutions"),
                        (["--jpeg-quality", "0"], "--jpeg-quality"),
                        (["--max-bad-fraction", "2"], "--max-bad-fraction")):
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "write_beton.py"), str(tmp_path),
                            str(tmp_path / "o"), *args], capture_output=True, text=True, timeout=120)
        last = r.stderr.strip().splitlines()[-1]  # argparse's usage above it names every option anyway
        assert r.returncode == 2 and re.match(rf"write_beton\.py: error: (argument )?{field}: expected", last), last


# ------------------------------------------------------------------ interruptions and reruns

def test_rerun_redoes_only_missing_or_changed(tmp_path):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=4, size=(40, 30), seed=7)
    out = tmp_path / "out"
    write_set(src, out, resolutions=(16, 32))
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.beton")}

    # An interrupted write: one beton gone, a partial file left behind.
    (out / "train_32.beton").unlink()
    (out / ".train_32.beton.partial").write_bytes(b"half a beton")
    write_set(src, out, resolutions=(16, 32))
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("*.beton")}
    assert set(now) == set(stamp)
    assert [n for n in now if now[n] != stamp.get(n)] == ["train_32.beton"]
    assert not (out / ".train_32.beton.partial").exists()

    # Other settings (JPEG quality) redo only the JPEG betons.
    write_set(src, out, resolutions=(16, 32), quality=70)
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("*.beton")}
    assert sorted(n for n in again if again[n] != now[n]) == ["train_32.beton", "val_32.beton"]
    m = json.loads((out / "manifest.json").read_text())
    assert {b["path"]: b["quality"] for b in m["betons"]}["val_32.beton"] == 70

    # A beton whose bytes changed behind our back is rewritten.
    with open(out / "val_16.beton", "ab") as f:
        f.write(b"\0")
    write_set(src, out, resolutions=(16, 32), quality=70)
    assert (out / "val_16.beton").stat().st_mtime_ns != again["val_16.beton"]


def test_rerun_decodes_only_new_or_changed_files(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=9)
    out = tmp_path / "out"
    write_set(src, out, resolutions=(16,))
    probed = []
    real = write_beton._probe
    monkeypatch.setattr(write_beton, "_probe", lambda arg: probed.append(arg[0].name) or real(arg))
    write_set(src, out, resolutions=(16,))
    assert probed == []
    changed = sorted((src / "train").glob("*/*.JPEG"))[1]
    changed.write_bytes(b"")  # now unreadable: must be found again, not taken from the cache
    m = write_set(src, out, resolutions=(16,), max_bad_fraction=0.5)
    assert probed == [changed.name]
    assert [sk["reason"] for sk in m["splits"]["train"]["skipped"]] == ["empty file"]


def test_a_lower_resolution_added_reuses_the_check(tmp_path, monkeypatch):
    """The check decodes at the smallest resolution; verdicts from a larger one stand for a
    smaller (the same stream, scaled down further), not the other way round."""
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=11)
    out = tmp_path / "out"
    write_set(src, out, resolutions=(32,))
    probed = []
    real = write_beton._probe
    monkeypatch.setattr(write_beton, "_probe", lambda arg: probed.append(arg[1]) or real(arg))
    write_set(src, out, resolutions=(16, 32))
    write_set(src, out, resolutions=(32,))
    assert probed == []  # nothing was decoded at 16 px: the cache still holds 32 px verdicts
    changed = sorted((src / "train").glob("*/*.JPEG"))[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    write_set(src, out, resolutions=(16, 32))
    assert probed == [16]
    assert json.loads((out / ".check-train.json").read_text())["max_side"] == 16
    probed.clear()
    write_set(src, out, resolutions=(32,))
    assert probed == [32] * len(list((src / "train").glob("*/*.JPEG")))  # back up: checked again


def test_an_interrupted_check_keeps_what_it_decoded(tmp_path, monkeypatch):
    """Ctrl-C (or a crash) in the middle of the check: the files decoded so far are in the
    cache, and the rerun decodes only the rest. The cache is also saved as the check goes (here
    as often as it can), so a SIGKILL loses at most the files since the last save."""
    src = make_folder(tmp_path / "src", n_classes=2, per_class=4, size=(40, 30), seed=10)
    out = tmp_path / "out"
    real, probed = write_beton._probe, []
    saves, real_save = [], write_beton._atomic_write_json
    monkeypatch.setattr(write_beton, "CHECK_SAVE_EVERY_S", 0.0)
    monkeypatch.setattr(write_beton, "_atomic_write_json", lambda path, obj: (
        saves.append(len(obj["files"])) if path.name.startswith(".check") else None,
        real_save(path, obj)))

    def probe_until_interrupted(arg):
        if len(probed) == 5:
            raise KeyboardInterrupt
        probed.append(arg[0])
        return real(arg)

    monkeypatch.setattr(write_beton, "_probe", probe_until_interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_set(src, out, resolutions=(16,), splits=["train"])
    cache = json.loads((out / ".check-train.json").read_text())
    assert sorted(src / rel for rel in cache["files"]) == sorted(probed)
    assert saves[-1] == 5 and saves[0] < 5, saves  # saved while checking, and once more on the way out
    first = list(probed)
    probed.clear()
    monkeypatch.setattr(write_beton, "_probe", lambda arg: probed.append(arg[0]) or real(arg))
    write_set(src, out, resolutions=(16,), splits=["train"])
    assert len(probed) == 8 - 5 and not set(probed) & set(first)


def test_a_read_error_is_reported_but_not_remembered(tmp_path, monkeypatch):
    """An OSError while checking (a flaky mount) skips the file this run; the next run reads it
    again instead of trusting the cached verdict. Decoding verdicts are remembered."""
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=11)
    out = tmp_path / "out"
    files = sorted((src / "train").glob("*/*.JPEG"))
    flaky, broken = files[1], files[4]
    broken.write_bytes(b"not a jpeg")
    real = write_beton.load_rgb

    def flaky_read(path, max_side):
        if path == flaky:
            raise OSError(5, "Input/output error")
        return real(path, max_side)

    monkeypatch.setattr(write_beton, "load_rgb", flaky_read)
    m = write_set(src, out, resolutions=(16,), splits=["train"], max_bad_fraction=0.5)
    assert sorted((Path(sk["path"]).name, sk["reason"].split(" (")[0].split(":")[0])
                  for sk in m["splits"]["train"]["skipped"]) == sorted(
        [(flaky.name, "unreadable"), (broken.name, "not an image PIL can identify")])
    monkeypatch.setattr(write_beton, "load_rgb", real)
    probed = []
    real_probe = write_beton._probe
    monkeypatch.setattr(write_beton, "_probe", lambda arg: probed.append(arg[0].name) or real_probe(arg))
    m = write_set(src, out, resolutions=(16,), splits=["train"], max_bad_fraction=0.5)
    assert probed == [flaky.name]
    assert [Path(sk["path"]).name for sk in m["splits"]["train"]["skipped"]] == [broken.name]
    assert m["splits"]["train"]["count"] == 5


def test_failure_while_writing_leaves_nothing_final(tmp_path, monkeypatch):
    """A file that passes the check and then fails inside FFCV's writer processes (it
    changed on disk): no hang, a clear error, no <split>_<r>.beton and no manifest."""
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=8)
    out = tmp_path / "out"
    victim = sorted((src / "train").glob("*/*.JPEG"))[2]
    real_probe = write_beton.probe_split

    def probe_then_break(items, *a, **kw):
        reasons = list(real_probe(items, *a, **kw))
        victim.write_bytes(b"")  # the file breaks between the check and the write
        return reasons

    monkeypatch.setattr(write_beton, "probe_split", probe_then_break)
    with pytest.raises(write_beton.WriteError, match="train_16.beton: 1 file.*unreadable"):
        write_set(src, out, resolutions=(16,))
    assert not list(out.glob("*.beton")) and not (out / "manifest.json").exists()
    assert not list(out.glob(".*.partial"))


def test_a_failing_writer_worker_stops_the_write_in_one_line(tmp_path, monkeypatch):
    """A failure inside FFCV's writer process itself (a full disk while encoding or writing pages):
    FFCV's parent would wait forever; ours stops, removes the partial file and names the beton."""
    import errno
    import os

    from ffcv.fields import RGBImageField
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=8)
    out = tmp_path / "out"
    calls = [0]
    real = RGBImageField.encode

    def encode(self, *a, **kw):  # forked into the worker: the third image hits a full disk
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *a, **kw)

    monkeypatch.setattr(RGBImageField, "encode", encode)
    with pytest.raises(write_beton.WriteError,
                       match=r"train_16.beton: a writer worker failed \(OSError: .*No space left on device\)"):
        write_set(src, out, resolutions=(16,))
    assert not list(out.glob("*.beton")) and not list(out.glob(".*partial")) and not (out / "manifest.json").exists()


def test_a_corrupt_exif_block_keeps_the_image_unrotated(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=4)

    def broken(img):
        raise TypeError("bad operand type for abs(): 'str'")  # what a fuzzed EXIF block gave
    monkeypatch.setattr(write_beton.ImageOps, "exif_transpose", broken)
    m = write_set(src, tmp_path / "out", resolutions=(16,))
    assert m["splits"]["train"]["count"] == 6 and m["splits"]["train"]["skipped"] == []
    monkeypatch.setattr(write_beton.Image, "open", lambda p: (_ for _ in ()).throw(RuntimeError("decoder bug")))
    with pytest.raises(ValueError, match="cannot decode: RuntimeError: decoder bug"):
        write_beton.load_rgb(sorted((src / "train").glob("*/*.JPEG"))[0], 16)


def test_a_source_rewritten_under_its_name_redoes_the_beton(tmp_path):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=3)
    out = tmp_path / "out"
    write_set(src, out, resolutions=(16,))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.beton")}
    victim = sorted((src / "val").glob("*/*.JPEG"))[0]
    Image.new("RGB", (50, 50), "white").save(victim, "JPEG")
    write_set(src, out, resolutions=(16,))
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.beton")}
    assert [n for n in after if after[n] != before[n]] == ["val_16.beton"]
    assert (16, 16) in stored_sizes(out / "val_16.beton")  # the new square image, not the old pixels


def test_writing_one_split_keeps_the_others(tmp_path):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=2)
    out = tmp_path / "out"
    full = write_set(src, out, resolutions=(16,))
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.beton")}
    only_val = write_set(src, out, resolutions=(16,), splits=["val"])
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.beton")} == stamp  # val's order is its own
    assert only_val["splits"] == full["splits"] and sorted(map(str, only_val["betons"])) == sorted(
        map(str, full["betons"]))


def test_out_and_manifest_paths_that_are_wrong_are_one_line(tmp_path):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=2, size=(20, 20), seed=6)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(write_beton.WriteError, match="afile: exists and is not a folder"):
        write_set(src, tmp_path / "afile")
    (tmp_path / "out" / "manifest.json").mkdir(parents=True)
    with pytest.raises(write_beton.WriteError, match="manifest.json: is a folder"):
        write_set(src, tmp_path / "out")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "write_beton.py"), str(src), str(tmp_path / "o"),
                        "--resolutions", "1800", "--raw-max-res", "2048"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "do not fit FFCV's 8 MiB page" in r.stderr


def test_a_writer_worker_killed_outright_stops_the_write(tmp_path, monkeypatch):
    """SIGKILL (the OOM killer) leaves no exception to report: the exit code is watched instead."""
    import os
    import signal

    from ffcv.fields import RGBImageField
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), seed=8)
    out = tmp_path / "out"
    calls = [0]
    real = RGBImageField.encode

    def encode(self, *a, **kw):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *a, **kw)

    monkeypatch.setattr(RGBImageField, "encode", encode)
    with pytest.raises(write_beton.WriteError,
                       match=r"train_16.beton: a writer worker failed \(exit code -9, killed by signal 9"):
        write_set(src, out, resolutions=(16,))
    assert not list(out.glob("*.beton")) and not list(out.glob(".*partial"))
    import ffcv.writer
    assert ffcv.writer.Process is __import__("multiprocessing").Process  # put back


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stopped_run_leaves_no_partial_file_and_reruns(tmp_path, sig, code):
    """SIGTERM (a scheduler's limit) or Ctrl-C (SIGINT to the whole process group) while a beton
    is written: one line, exit 143 / 130, the partial file (on ImageNet up to ~47 GB) removed,
    the check's record kept; the rerun finishes the set. Run as a process of its own, as the
    handlers are main()'s."""
    import os
    import signal
    import time
    src = make_folder(tmp_path / "src", n_classes=2, per_class=200, size=(256, 192), splits={"val": 2}, seed=12)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "tools" / "write_beton.py"), str(src), str(out),
           "--resolutions", "192", "--workers", "1", "--jpeg-quality", "95"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env=dict(os.environ, PYTHONFAULTHANDLER="1"))
    deadline = time.monotonic() + 120
    while not list(out.glob(".train_192.beton.*partial")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.poll() is None, "the write ended before it could be stopped"
    os.killpg(p.pid, getattr(signal, sig))
    try:
        err = p.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:  # show where it hangs: faulthandler prints every thread
        os.killpg(p.pid, signal.SIGABRT)
        pytest.fail("no exit 60 s after the signal:\n" + p.communicate(timeout=60)[1][-8000:])
    assert p.returncode == code, err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith(f"error: {out}: ") and "rerun the same command" in last, err
    assert not [f.name for f in out.iterdir() if "partial" in f.name or f.suffix == ".beton"]
    assert not (out / "manifest.json").exists() and (out / ".check-train.json").is_file()
    if sig == "SIGTERM":  # the rerun (10 s, most of it importing FFCV) once
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["count"] == 400


# ------------------------------------------------------------------ review of 2026-12-02 (stage 1)

def test_a_file_system_error_inside_the_decoder_is_not_a_remembered_verdict(tmp_path, monkeypatch):
    """PIL raises the file system's OSError (permission, I/O) from Image.open: it is the disk's
    failure, not the image's, so the check reports it as unreadable and does not remember it
    (before, load_rgb made it a 'cannot decode' verdict, cached until the file's mtime changed)."""
    src = make_folder(tmp_path / "src", n_classes=1, per_class=1, size=(40, 30), seed=3)
    f = next((src / "train").glob("*/*.JPEG"))

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(write_beton.Image, "open", denied)
    with pytest.raises(PermissionError):
        write_beton.load_rgb(f, 16)
    assert write_beton._probe((f, 16)) == f"{write_beton.UNREADABLE} (Permission denied)"


def test_a_file_name_that_is_not_utf8_is_one_line_and_keeps_the_set(tmp_path):
    src = make_folder(tmp_path / "src", n_classes=2, per_class=3, size=(40, 30), splits={"val": 1}, seed=5)
    out = tmp_path / "out"
    write_set(src, out, resolutions=(16,))
    bad = os.fsencode(src / "val" / "class_00") + b"/x\xff.JPEG"
    with open(bad, "wb") as fh:
        fh.write(b"whatever")
    with pytest.raises(write_beton.WriteError, match=r"x\\udcff\.JPEG'?: name is not valid UTF-8"):
        write_set(src, out, resolutions=(16,))
    assert (out / "manifest.json").is_file()  # the set written before is still usable


def test_a_dangling_symlink_is_reported_and_an_empty_class_warned(tmp_path, capsys):
    src = make_folder(tmp_path / "src", n_classes=3, per_class=2, size=(40, 30), seed=6)
    (src / "train" / "class_01" / "gone.JPEG").symlink_to(tmp_path / "nowhere.JPEG")
    (src / "train" / "class_01" / "a_folder").symlink_to(src / "train" / "class_00")  # ignored, as folders are
    for f in (src / "train" / "class_02").iterdir():
        f.unlink()
    m = write_set(src, tmp_path / "out", resolutions=(16,), splits=["train"], max_bad_fraction=0.5)
    assert [(sk["path"], sk["reason"].split(" ")[0]) for sk in m["splits"]["train"]["skipped"]] == [
        ("train/class_01/gone.JPEG", write_beton.UNREADABLE)]
    err = capsys.readouterr().err
    assert "class_02: no readable images" in err and "class_00: no readable" not in err
    assert m["splits"]["train"]["count"] == 4 and len(m["classes"]) == 3


def test_extreme_aspect_ratios_keep_two_pixels_and_evaluate(tmp_path):
    """A 400x4 image at 16 px used to be stored 16x1: FFCV's centre crop of a 1-px side is 0 px,
    and OpenCV aborted the val loader's process. A 1-px image is skipped as too small."""
    from pipeline.data import BetonSet
    assert write_beton.fit_size(400, 4, 16) == (16, 2) and write_beton.fit_size(4, 400, 16) == (2, 16)
    src = make_folder(tmp_path / "src", n_classes=2, per_class=2, size=(40, 30), splits={"val": 1}, seed=7)
    Image.new("RGB", (400, 4), (200, 10, 10)).save(src / "val" / "class_00" / "wide.JPEG")
    Image.new("RGB", (1, 1)).save(src / "val" / "class_01" / "dot.png", format="PNG")
    m = write_set(src, tmp_path / "out", resolutions=(16,), max_bad_fraction=0.5)
    assert [(sk["path"], sk["reason"]) for sk in m["splits"]["val"]["skipped"]] == [
        ("val/class_01/dot.png", "too small: 1x1 px (expected at least 2 px a side)")]
    assert (2, 16) in stored_sizes(tmp_path / "out" / "val_16.beton")
    loader = BetonSet(tmp_path / "out").loader("val", batch_size=8, output_size=16, num_workers=1)
    images = [x for x, _ in loader]
    assert sum(len(x) for x in images) == 3 and 16 in images[0].shape[1:] and images[0].shape[-2] == 16


def test_a_writer_worker_dies_with_its_parent(tmp_path):
    """After a kill -9 of write_beton, nobody ends its writer workers' wait on the work queue: they
    must die with it (Linux's PR_SET_PDEATHSIG), not hold memory and the partial file for ever."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import multiprocessing, sys, time\n"
        "from tools import write_beton\n"
        "def child(path):\n"
        "    write_beton._die_with_parent()\n"
        "    open(path, 'w').write(str(__import__('os').getpid()))\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    multiprocessing.Process(target=child, args=(sys.argv[1],)).start()\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(pid_file)], cwd=ROOT)
    try:
        for _ in range(300):
            if pid_file.is_file() and pid_file.read_text():
                break
            time.sleep(0.1)
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait()

        def alive(pid: int) -> bool:
            try:
                return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] not in ("Z", "X")
            except (FileNotFoundError, IndexError):
                return False
        for _ in range(100):
            if not alive(child):
                break
            time.sleep(0.1)
        assert not alive(child)
    finally:
        parent.kill()
        if pid_file.is_file() and pid_file.read_text() and alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), 9)


def test_verdicts_of_another_check_version_are_redone(tmp_path, monkeypatch):
    """A check cache written under other rules (before 'too small' existed) is not trusted."""
    src = make_folder(tmp_path / "src", n_classes=2, per_class=2, size=(40, 30), seed=8)
    out = tmp_path / "out"
    write_set(src, out, resolutions=(16,), splits=["train"])
    cache = out / ".check-train.json"
    old = json.loads(cache.read_text())
    assert old["version"] == write_beton.CHECK_VERSION
    del old["version"]  # as tool version 1.0 wrote it
    cache.write_text(json.dumps(old))
    probed = []
    real = write_beton._probe
    monkeypatch.setattr(write_beton, "_probe", lambda arg: probed.append(arg[0].name) or real(arg))
    write_set(src, out, resolutions=(16,), splits=["train"])
    assert len(probed) == 4
