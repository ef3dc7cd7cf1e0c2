"""pipeline/data.py: beton sets opened through their manifest, FFCV loaders."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from pipeline.data import BetonSet, ManifestError


def test_beton_set_reads_manifest(tiny_betons):
    bs = BetonSet(tiny_betons)
    assert bs.classes == ["class_00", "class_01", "class_02"] and bs.num_classes == 3
    assert bs.count("train") == 24 and bs.count("val") == 12
    assert bs.resolutions("train") == [16, 32]
    # The smallest beton that serves a size; above every beton, the largest.
    assert [bs.beton_for("train", s).resolution for s in (8, 16, 17, 32, 224)] == [16, 16, 32, 32, 32]


def test_bad_sets_get_clear_errors(tiny_betons, tmp_path):
    with pytest.raises(ManifestError, match="manifest.json: not found"):
        BetonSet(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_betons, broken)
    (broken / "val_32.beton").unlink()
    with pytest.raises(ManifestError, match="lists val_32.beton"):
        BetonSet(broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        BetonSet(broken)
    m = json.loads((tiny_betons / "manifest.json").read_text())
    del m["classes"]
    (broken / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="classes"):
        BetonSet(broken)
    with pytest.raises(ValueError, match="split 'test'"):
        BetonSet(tiny_betons).loader("test", batch_size=4, output_size=16)


def _replace(d, m, fixed_bytes=False):
    """val_16.beton copied over train_16.beton; fixed_bytes: and the manifest's bytes updated."""
    shutil.copy(d / "val_16.beton", d / "train_16.beton")
    if fixed_bytes:
        m["betons"][0]["bytes"] = (d / "train_16.beton").stat().st_size


def _truncate(d, m):
    """An interrupted cp."""
    f = d / "train_32.beton"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _not_ffcv(d, m):
    f = d / "train_16.beton"
    f.write_bytes(bytes(f.stat().st_size))


def _path_outside(d, m, absolute):
    shutil.copy(d / "train_16.beton", d.parent / "train_16.beton")  # a file that is there
    m["betons"][0]["path"] = str(d.parent / "train_16.beton") if absolute else "../train_16.beton"


# betons[0..3] are train_16, train_32, val_16, val_32; classes class_00..02; train 24, val 12.
BROKEN = {
    "replaced": (_replace, r"train_16\.beton: \d+ bytes, manifest\.json betons\[0\]\.bytes says"),
    "replaced, bytes fixed": (lambda d, m: _replace(d, m, fixed_bytes=True),
                              r"train_16\.beton: holds 12 images, manifest\.json betons\[0\]\.count says 24"),
    "truncated": (_truncate, r"train_32\.beton: \d+ bytes, manifest\.json betons\[1\]\.bytes"),
    "not a beton": (_not_ffcv, r"train_16\.beton: not an FFCV beton"),
    "beton count": (lambda d, m: m["betons"][0].update(count=23),
                    r"train_16\.beton: holds 24 images, manifest\.json betons\[0\]\.count says 23"),
    "split count": (lambda d, m: m["splits"]["train"].update(count=25),
                    r"manifest\.json: splits\.train\.count says 25, but train_16\.beton holds 24"),
    "split without betons": (lambda d, m: m.update(betons=m["betons"][:2]),
                             r"manifest\.json: splits\.val: no beton"),
    "beton of an unlisted split": (lambda d, m: m["betons"][2].update(split="test"),
                                   r"manifest\.json: betons\[2\]\.split: expected one of the splits"),
    "two betons at one resolution": (lambda d, m: m["betons"][1].update(resolution=16),
                                     r"manifest\.json: betons: two betons of split train"),
    "fields missing": (lambda d, m: m.pop("fields"), r"manifest\.json: fields: missing"),
    "field not in beton": (lambda d, m: m["fields"].update(image="img"),
                           r"train_16\.beton: no field 'img' \(manifest\.json fields\.image\)"),
    "resolution abc": (lambda d, m: m["betons"][0].update(resolution="abc"),
                       r"manifest\.json: betons\[0\]\.resolution: expected a positive int, got 'abc'"),
    "resolution 0": (lambda d, m: m["betons"][0].update(resolution=0), r"betons\[0\]\.resolution"),
    "classes duplicate": (lambda d, m: m["classes"].__setitem__(1, "class_00"),
                          r"manifest\.json: classes: expected unique names, got \['class_00'\]"),
    "classes empty": (lambda d, m: m.update(classes=[], num_classes=0),
                      r"manifest\.json: classes: expected a non-empty list"),
    "num_classes": (lambda d, m: m.update(num_classes=4),
                    r"manifest\.json: num_classes: expected len\(classes\) = 3, got 4"),
    "mode png": (lambda d, m: m["betons"][0].update(mode="png"),
                 r"manifest\.json: betons\[0\]\.mode: expected 'raw' or 'jpg', got 'png'"),
    "path ../": (lambda d, m: _path_outside(d, m, absolute=False),
                 r"manifest\.json: betons\[0\]\.path: expected a file name in the set's folder"),
    "path absolute": (lambda d, m: _path_outside(d, m, absolute=True), r"manifest\.json: betons\[0\]\.path"),
    "bytes missing": (lambda d, m: m["betons"][3].pop("bytes"), r"manifest\.json: betons\[3\]\.bytes: missing"),
}


@pytest.mark.parametrize("breakage", BROKEN)
def test_broken_or_mismatched_sets_fail_in_one_line(tiny_betons, tmp_path, breakage):
    """Each would otherwise be accepted and then serve wrong images or fail deep in FFCV."""
    edit, message = BROKEN[breakage]
    d = tmp_path / "set"
    shutil.copytree(tiny_betons, d)
    m = json.loads((d / "manifest.json").read_text())
    edit(d, m)
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=message) as e:
        BetonSet(d)
    assert "\n" not in str(e.value)


def test_a_copied_set_still_loads(tiny_betons, tmp_path):
    """The checks pass on a good set wherever it lies (beton paths are relative)."""
    d = tmp_path / "copy"
    shutil.copytree(tiny_betons, d)
    bs = BetonSet(d)
    assert bs.fields == {"image": "image", "label": "label"} and bs.betons[0].bytes > 0
    batches = iter(bs.loader("val", batch_size=4, output_size=16, num_workers=1))
    images, labels = next(batches)
    batches.close()  # stops FFCV's epoch thread now
    assert images.shape == (4, 3, 16, 16) and labels.shape == (4,)


def test_train_loader_switches_size_and_beton(tiny_betons):
    bs = BetonSet(tiny_betons)
    ld = bs.loader("train", batch_size=8, output_size=12, num_workers=1, seed=3)
    assert len(ld) == 3 and ld.num_images == 24
    seen = {}
    for size in (12, 16, 24, 32, 12):
        ld.set_output_size(size)
        labels = []
        for images, y in ld:
            assert images.shape == (8, 3, size, size) and images.dtype == torch.uint8
            assert y.shape == (8,) and y.dtype == torch.int64
            labels.append(y.clone())
        seen[(size, ld.epoch)] = torch.cat(labels)
        assert ld.beton.resolution == (16 if size <= 16 else 32)
    # The loader of each beton is built once and reused across epochs and sizes.
    assert len(ld._built) == 2
    # beton_scale 2: a size decodes from a beton at least twice its size (the largest where none is)
    sharp = bs.loader("train", batch_size=8, output_size=8, num_workers=1, beton_scale=2.0)
    assert sharp.beton.resolution == 16
    for size, res in ((9, 32), (16, 32), (32, 32)):
        sharp.set_output_size(size)
        assert sharp.beton.resolution == res
    images, _ = next(iter(sharp))
    assert images.shape == (8, 3, 32, 32)
    orders = list(seen.values())
    assert all(sorted(o.tolist()) == [0] * 8 + [1] * 8 + [2] * 8 for o in orders)
    assert len({tuple(o.tolist()) for o in orders}) > 1, "every epoch had the same order"


@pytest.mark.parametrize("taken", [1, 11])  # 11 of 12: the last batch queued, FFCV's final put(None) blocked
def test_an_epoch_left_early_stops_ffcvs_thread(tiny_betons, taken):
    """A stage change leaves an epoch early: FFCV's epoch thread must have ended when the loop is
    closed, not wait on its full queue for the rest of the run holding its batch buffers (pinned and
    device memory on CUDA), nor still decode when the next epoch starts or the interpreter exits."""
    import threading
    import time

    from ffcv.loader.epoch_iterator import EpochIterator

    def epoch_threads():
        return {t for t in threading.enumerate() if isinstance(t, EpochIterator)}

    before = epoch_threads()
    ld = BetonSet(tiny_betons).loader("train", batch_size=2, output_size=16, num_workers=1, batches_ahead=1)
    it = iter(ld)
    for _ in range(taken):  # 12 batches, a queue of 1: the thread now waits to put the next one
        next(it)
    time.sleep(0.5)
    mine = epoch_threads() - before
    assert len(mine) == 1
    it.close()
    assert not any(t.is_alive() for t in mine)


def test_same_seed_same_order(tiny_betons):
    bs = BetonSet(tiny_betons)
    a = [y.clone() for _, y in bs.loader("train", batch_size=8, output_size=16, num_workers=1, seed=5)]
    b = [y.clone() for _, y in bs.loader("train", batch_size=8, output_size=16, num_workers=1, seed=5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_val_loader_center_crops_every_image_in_order(tiny_betons):
    bs = BetonSet(tiny_betons)
    ld = bs.loader("val", batch_size=5, output_size=16, num_workers=1, device="cpu")
    batches = [(x.clone(), y.clone()) for x, y in ld]
    assert [len(y) for _, y in batches] == [5, 5, 2]  # no image dropped
    again = [(x.clone(), y.clone()) for x, y in ld]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert batches[0][0].shape == (5, 3, 16, 16)
    # Textured images: a crop is not flat.
    assert batches[0][0].float().std() > 10


def test_an_evaluation_inside_a_training_epoch_runs_on_a_threadsafe_numba_layer(tiny_betons):
    """The val epoch decodes while the training epoch's thread still decodes ahead: two Numba
    parallel regions at once, which Numba's workqueue layer (its fallback without libtbb/libgomp)
    aborts on (rc 134). Asked for workqueue outright, the loader still starts a thread-safe one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import numba
from pipeline.data import BetonSet
bs = BetonSet({str(tiny_betons)!r})
tr = bs.loader("train", batch_size=4, output_size=16, num_workers=2, seed=1)
va = bs.loader("val", batch_size=4, output_size=32, num_workers=2)
for _ in range(2):
    for x, y in tr:
        assert sum(len(b[1]) for b in va) == {BetonSet(tiny_betons).count("val")}
print("layer", numba.threading_layer())
"""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    p = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-1] in ("tbb", "omp")


def test_an_epoch_left_early_waits_for_its_device_copies():
    """FFCV copies batches decoded ahead on its own CUDA streams; an epoch stopped early (a stage change)
    waits for them before its buffers are dropped (else a copy could write into reused memory)."""
    import queue
    from pipeline.data import _stop_epoch

    class Stream:
        synced = 0

        def synchronize(self):
            self.synced += 1

    class Epoch:  # FFCV's EpochIterator, as _stop_epoch uses it, with its thread already ended
        iter_ixes, output_queue, closed = iter(range(5)), queue.Queue(2), False
        cuda_streams = [Stream(), None, Stream()]

        def close(self):
            self.closed = True

        def is_alive(self):
            return False

    e = Epoch()
    _stop_epoch(e)
    assert e.closed and list(e.iter_ixes) == [] and [s.synced for s in e.cuda_streams if s] == [1, 1]
