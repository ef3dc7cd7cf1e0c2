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
