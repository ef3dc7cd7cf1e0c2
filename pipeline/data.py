"""FFCV loaders over a beton set written by tools/write_beton.py.

A `BetonSet` opens the set through its manifest.json; `BetonSet.loader` returns a
`BetonLoader` that yields uint8 NCHW images and int64 labels (on a device if given).
FFCV decodes and crops; everything after that (flip, normalisation, mixing) is batched
tensor code in pipeline/augment.py.

Pitfalls of FFCV this module handles:
- Building a Loader JIT-compiles its pipeline (seconds): loaders are built once per
  beton and reused across epochs and output sizes.
- The output size can change between epochs by setting the decoder's output_size: FFCV
  re-plans its buffers at the start of every epoch (ffcv-imagenet does the same).
- Output buffers are reused from batch to batch: clone what you keep.
- A Numba-JIT op after ToTensor on CPU can hang, so the pipelines end in torch ops only.
- An epoch left early must stop FFCV's epoch thread before anything else runs (`_stop_epoch`).
"""
from __future__ import annotations

import json
import queue
import reprlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numba
import numpy as np
import torch


def _stop_epoch(epoch) -> None:
    """Stop an FFCV 1.0.2 epoch thread (`EpochIterator`) left early, and wait until it has ended.

    Left alone it holds a reference to itself and its batch buffers (pinned and device memory on
    CUDA) for the rest of the run; `close()` alone lets it decode until its queue is full and only
    then notice, so it would still be in Numba code while the next epoch's thread starts (Numba's
    workqueue threading layer aborts on that) or when the interpreter exits (which aborted the
    process: "terminate called without an active exception"). So: no further batch is started,
    and a final `put(None)` (FFCV's has no timeout) blocked on a full queue gets room. The wait is
    at most the batch in flight.

    On CUDA the batches decoded ahead may still be copying to the device on FFCV's own streams,
    which the main stream waits for only when a batch is handed out: those copies are waited for
    here, before the epoch's buffers are dropped and their memory reused.
    """
    epoch.iter_ixes = iter(())  # no batch after the one in flight
    epoch.close()  # a put that times out on the full queue then returns
    while epoch.is_alive():
        epoch.join(timeout=0.05)
        if epoch.is_alive() and epoch.output_queue.full():
            try:
                epoch.output_queue.get_nowait()
            except queue.Empty:
                pass
    for stream in getattr(epoch, "cuda_streams", None) or ():
        if stream is not None:
            stream.synchronize()

DEFAULT_CROP_RATIO = 224 / 256  # centre crop of the val images, as in DeiT/ffcv-imagenet


class ManifestError(ValueError):
    """manifest.json is missing, unreadable or inconsistent with the betons beside it."""


class ThreadingLayerError(RuntimeError):
    """Numba cannot run FFCV's decoding on a thread-safe threading layer (tbb or omp)."""


# Before anything imports FFCV, which starts Numba's threads (see use_threadsafe_numba).
if numba.config.THREADING_LAYER in ("default", "workqueue"):
    numba.config.THREADING_LAYER = "threadsafe"


def use_threadsafe_numba() -> str:
    """Starts Numba's threads on a thread-safe layer (tbb or omp) and returns its name.

    FFCV decodes in Numba `parallel` code on each epoch's own thread, and an evaluation in the
    middle of a training epoch runs the val epoch's thread while the training one still decodes
    ahead. Numba's workqueue layer, its fallback where neither libtbb nor libgomp is found, aborts
    the process on that ("The workqueue threading layer is not threadsafe and may not be accessed
    concurrently by multiple threads", rc 134, reproduced with NUMBA_THREADING_LAYER=workqueue).
    The layer is chosen once per process, at the first parallel launch, which importing FFCV
    already makes: so this module asks for a thread-safe one when it is imported, and this checks
    what was started.
    """
    from numba.np.ufunc import parallel
    try:
        parallel._launch_threads()
    except ValueError:
        raise ThreadingLayerError("numba: no thread-safe threading layer (tbb or omp) could be loaded, and FFCV's "
                                  "decoding needs one: install libtbb12 (apt) or tbb (pip), or libgomp1") from None
    layer = numba.threading_layer()
    if layer == "workqueue":
        raise ThreadingLayerError("numba: this process already started the workqueue threading layer, which "
                                  "aborts under FFCV's concurrent epochs; start it with NUMBA_THREADING_LAYER=tbb or omp")
    return layer


@dataclass(frozen=True)
class BetonInfo:
    split: str
    resolution: int
    path: Path
    mode: str
    count: int
    bytes: int  # file size written, to catch truncated or replaced copies


class _Malformed(Exception):
    """A manifest field that is missing or not what was expected (message: field and why)."""


def _is_int(v, least: int = 0) -> bool:
    """A JSON integer >= least (Python's bool is an int; the manifest's is not)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _is_file_name(v) -> bool:
    """A plain file name: the betons live beside manifest.json, never elsewhere."""
    return isinstance(v, str) and v not in ("", ".", "..") and Path(v).name == v


def _get(obj, key: str, where: str, expected: str, ok=lambda v: True):
    """obj[key], checked.

    Args:
        obj: a parsed JSON object (anything else counts as malformed).
        key: the field.
        where: the field's parent for the message ("betons[2]"); "" at top level.
        expected: what the field should be, for the message.
        ok: the check the value must pass.
    Raises:
        _Malformed: naming the field, what was expected and (shortened) what it holds.
    """
    name = f"{where}.{key}" if where else key
    if not isinstance(obj, dict) or key not in obj:
        raise _Malformed(f"{name}: missing (expected {expected})")
    if not ok(obj[key]):
        raise _Malformed(f"{name}: expected {expected}, got {reprlib.repr(obj[key])}")
    return obj[key]


def _parse_classes(m: dict) -> list[str]:
    """The class names: label i is classes[i], so a duplicate or a count off by one would
    silently shift or merge classes."""
    classes = _get(m, "classes", "", "a non-empty list of class names",
                   lambda v: isinstance(v, list) and v and all(isinstance(c, str) and c for c in v))
    twice = sorted(c for c, n in Counter(classes).items() if n > 1)
    if twice:
        raise _Malformed(f"classes: expected unique names, got {reprlib.repr(twice)} more than once")
    _get(m, "num_classes", "", f"len(classes) = {len(classes)}",
         lambda v: _is_int(v) and v == len(classes))
    return classes


def _parse_beton(b, where: str, root: Path, splits: dict) -> BetonInfo:
    """One entry of the manifest's betons list (where: "betons[i]")."""
    return BetonInfo(
        split=_get(b, "split", where, f"one of the splits ({', '.join(splits)})",
                   lambda v: isinstance(v, str) and v in splits),
        resolution=_get(b, "resolution", where, "a positive int", lambda v: _is_int(v, 1)),
        path=root / _get(b, "path", where, "a file name in the set's folder", _is_file_name),
        mode=_get(b, "mode", where, "'raw' or 'jpg'", lambda v: v in ("raw", "jpg")),
        count=_get(b, "count", where, "an int >= 0", _is_int),
        bytes=_get(b, "bytes", where, "an int >= 0", _is_int))


def _check_beton_file(b: BetonInfo, where: str, fields: dict[str, str]) -> None:
    """The beton file is the one the manifest describes, as far as its size and FFCV header
    tell (no full read): a truncated copy or another beton copied over it would otherwise
    load, then fail deep in FFCV or serve the wrong images.

    Args:
        b: the beton as the manifest lists it.
        where: its entry in the manifest ("betons[i]"), for the message.
        fields: the manifest's field names, which FFCV looks up in the header.
    Raises:
        ManifestError: naming the beton file and the manifest field it contradicts.
    """
    size = b.path.stat().st_size
    if size != b.bytes:
        raise ManifestError(f"{b.path}: {size} bytes, manifest.json {where}.bytes says {b.bytes} "
                            f"(truncated or replaced?)")
    # FFCV reads its header this way (ffcv/reader.py); importing ffcv costs seconds of
    # Numba, so not at module import.
    from ffcv.types import CURRENT_VERSION, FieldDescType, HeaderType
    from ffcv.utils import decode_null_terminated_string
    header = np.fromfile(b.path, dtype=HeaderType, count=1)
    if len(header) < 1 or header[0]["version"] != CURRENT_VERSION:
        raise ManifestError(f"{b.path}: not an FFCV beton (format version {CURRENT_VERSION})")
    if header[0]["num_samples"] != b.count:
        raise ManifestError(f"{b.path}: holds {header[0]['num_samples']} images, manifest.json "
                            f"{where}.count says {b.count} (another beton copied over it?)")
    n_fields = int(header[0]["num_fields"])
    if HeaderType.itemsize + n_fields * FieldDescType.itemsize > size:
        raise ManifestError(f"{b.path}: not an FFCV beton (header larger than the file)")
    descs = np.fromfile(b.path, dtype=FieldDescType, count=n_fields, offset=HeaderType.itemsize)
    names = [decode_null_terminated_string(d["name"]) for d in descs]
    for role in ("image", "label"):
        if fields[role] not in names:
            raise ManifestError(f"{b.path}: no field '{fields[role]}' (manifest.json fields.{role}); "
                                f"it has {', '.join(names)}")


class BetonSet:
    """A folder of betons and the manifest.json that describes them."""

    def __init__(self, root: str | Path):
        """Opens the set, checking the manifest against itself and the betons (sizes and
        FFCV headers only): a broken or mismatched set fails here in one line, not in FFCV.

        Args:
            root: the folder tools/write_beton.py wrote.
        Raises:
            ManifestError: naming manifest.json or the beton file, the field and what was expected.
        """
        self.root = Path(root)
        path = self.root / "manifest.json"
        try:
            m = json.loads(path.read_text())
        except FileNotFoundError:
            raise ManifestError(f"{path}: not found (write the set with tools/write_beton.py)") from None
        except ValueError as e:
            raise ManifestError(f"{path}: not valid JSON ({e})") from None
        except OSError as e:
            raise ManifestError(f"{path}: unreadable ({e.strerror})") from None
        try:
            self.classes: list[str] = _parse_classes(m)
            self.fields: dict[str, str] = _get(
                m, "fields", "", "{'image': name, 'label': name}",
                lambda v: isinstance(v, dict) and all(isinstance(v.get(k), str) for k in ("image", "label")))
            splits = _get(m, "splits", "", "an object with a count per split",
                          lambda v: isinstance(v, dict) and v)
            self._counts = {s: _get(v, "count", f"splits.{s}", "an int >= 0", _is_int)
                            for s, v in splits.items()}
            listed = _get(m, "betons", "", "a list", lambda v: isinstance(v, list))
            self.betons = [_parse_beton(b, f"betons[{i}]", self.root, splits) for i, b in enumerate(listed)]
            self._check_betons_cover_splits()
        except _Malformed as e:
            raise ManifestError(f"{path}: {e}") from None
        for i, b in enumerate(self.betons):
            if not b.path.is_file():
                raise ManifestError(f"{path}: lists {b.path.name}, which is not in {self.root}")
            try:
                _check_beton_file(b, f"betons[{i}]", self.fields)
            except OSError as e:
                raise ManifestError(f"{b.path}: unreadable ({e.strerror})") from None
            if b.count != self._counts[b.split]:  # headers agree with betons[i].count by now
                raise ManifestError(f"{path}: splits.{b.split}.count says {self._counts[b.split]}, "
                                    f"but {b.path.name} holds {b.count} images")
        self.manifest = m

    def _check_betons_cover_splits(self) -> None:
        """Every split has a beton (beton_for needs one), and one only per resolution."""
        for s in self._counts:
            res = [b.resolution for b in self.betons if b.split == s]
            if not res:
                raise _Malformed(f"splits.{s}: no beton of this split in betons")
            if len(set(res)) < len(res):
                raise _Malformed(f"betons: two betons of split {s} at one resolution ({sorted(res)})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def count(self, split: str) -> int:
        self._check_split(split)
        return self._counts[split]

    def resolutions(self, split: str) -> list[int]:
        self._check_split(split)
        return sorted(b.resolution for b in self.betons if b.split == split)

    def beton_for(self, split: str, output_size: int, scale: float = 1.0) -> BetonInfo:
        """The smallest beton of the split whose resolution is at least scale x output_size (or
        the largest there is: images are never stored above their source size anyway). A crop
        takes part of the stored image, so at scale 1 it is enlarged (~2x for a random-resized
        crop of ImageNet's range); scale 2 keeps it near its stored sharpness."""
        self._check_split(split)
        ours = sorted((b for b in self.betons if b.split == split), key=lambda b: b.resolution)
        for b in ours:
            if b.resolution >= scale * output_size:
                return b
        return ours[-1]

    def loader(self, split: str, batch_size: int, output_size: int, num_workers: int = 0,
               device: torch.device | str | None = None, seed: int = 0,
               drop_last: bool | None = None, distributed: bool = False,
               scale: tuple[float, float] = (0.08, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3),
               crop_ratio: float = DEFAULT_CROP_RATIO, os_cache: bool = True,
               batches_ahead: int = 3, shard: tuple[int, int] | None = None,
               beton_scale: float = 1.0) -> "BetonLoader":
        """A loader over one split.

        Args:
            split: "train" gets a random-resized crop (seeded: pipeline/crops.py) in a random
                order; any other split a centre crop in file order.
            batch_size: images per batch (per process when distributed).
            output_size: side of the square output images; change it with set_output_size.
            num_workers: decoding threads (0: all cores).
            device: where batches land (non-blocking copy); None keeps them on the CPU.
            seed: order seed (the same seed gives the same order).
            drop_last: drop the last partial batch (default: True for train, False otherwise).
            distributed: shard the order across torch.distributed ranks (FFCV's emulation of
                DistributedSampler: it pads the last round with repeated images).
            scale, ratio: random-resized-crop area and aspect ranges (train).
            crop_ratio: centre crop side / image side (eval).
            os_cache: let the OS page cache hold the betons (FFCV's os_cache).
            batches_ahead: batches FFCV prepares ahead.
            shard: (rank, world): this process reads images rank, rank + world, ... only,
                exactly once each (distributed evaluation without padding).
            beton_scale: each size decodes from the smallest beton at least this many times
                larger (beton_for).
        """
        self._check_split(split)
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        train = split == "train"
        return BetonLoader(self, split, batch_size, output_size, train=train,
                           num_workers=num_workers, device=device, seed=seed,
                           drop_last=train if drop_last is None else drop_last,
                           distributed=distributed, scale=scale, ratio=ratio,
                           crop_ratio=crop_ratio, os_cache=os_cache,
                           batches_ahead=batches_ahead, shard=shard, beton_scale=beton_scale)

    def _check_split(self, split: str) -> None:
        if split not in self._counts:
            raise ValueError(f"split '{split}' not in {self.root / 'manifest.json'} "
                             f"(has {', '.join(sorted(self._counts))})")


class BetonLoader:
    """Iterates (images uint8 (B, 3, S, S), labels int64 (B,)) over one split (images in
    channels_last memory format, a view of FFCV's buffer); the output
    size S may change between epochs. One FFCV Loader is built per beton, lazily."""

    def __init__(self, bset: BetonSet, split: str, batch_size: int, output_size: int, *,
                 train: bool, num_workers: int, device, seed: int, drop_last: bool,
                 distributed: bool, scale, ratio, crop_ratio: float, os_cache: bool,
                 batches_ahead: int, shard: tuple[int, int] | None = None, beton_scale: float = 1.0):
        self.bset, self.split, self.batch_size, self.train = bset, split, batch_size, train
        self.beton_scale = beton_scale
        self.device = torch.device(device) if device is not None else None
        self._opts = dict(num_workers=num_workers, seed=seed, drop_last=drop_last,
                          distributed=distributed, os_cache=os_cache,
                          batches_ahead=batches_ahead)
        self._shard = shard
        self._scale, self._ratio, self._crop_ratio = scale, ratio, crop_ratio
        self._built: dict[Path, tuple[object, object]] = {}  # beton -> (Loader, decoder)
        self.output_size = 0
        self.epoch = 0  # epochs started, across betons: each epoch gets its own order
        self.batches_done = 0  # batches handed out in the epoch in progress
        self._skip = 0  # batches of the next epoch to leave out (resume mid-epoch)
        self.set_output_size(output_size)

    def set_output_size(self, size: int) -> None:
        """Takes effect at the next iteration (epoch); picks the beton that serves size."""
        if int(size) < 1:
            raise ValueError(f"output_size: expected >= 1, got {size}")
        self.output_size = int(size)
        self.beton = self.bset.beton_for(self.split, self.output_size, self.beton_scale)

    def _ffcv(self):
        from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import Squeeze, ToDevice, ToTensor, ToTorchImage

        key = self.beton.path
        if key not in self._built:
            use_threadsafe_numba()
            out = (self.output_size, self.output_size)
            if self.train:
                from pipeline.crops import SeededRandomResizedCrop
                decoder = SeededRandomResizedCrop(out, scale=self._scale, ratio=self._ratio,
                                                  seed=self._opts["seed"])
                order = OrderOption.RANDOM
            else:
                decoder = CenterCropRGBImageDecoder(out, ratio=self._crop_ratio)
                order = OrderOption.SEQUENTIAL
            image = [decoder, ToTensor()]
            label = [IntDecoder(), ToTensor(), Squeeze(1)]
            if self.device is not None:
                image.append(ToDevice(self.device, non_blocking=True))
                label.append(ToDevice(self.device, non_blocking=True))
            # A zero-copy NCHW view of FFCV's NHWC buffer (channels_last memory format),
            # which the patch-embedding convolution and the augmentation take as is.
            image.append(ToTorchImage(channels_last=True))
            fields = self.bset.fields
            indices = None
            if self._shard is not None:
                rank, world = self._shard
                indices = list(range(rank, self.beton.count, world))
            loader = Loader(str(key), batch_size=self.batch_size, order=order,
                            pipelines={fields["image"]: image, fields["label"]: label},
                            indices=indices, **self._opts)
            self._built[key] = (loader, decoder)
        loader, decoder = self._built[key]
        decoder.output_size = (self.output_size, self.output_size)
        return loader

    def __len__(self) -> int:
        return len(self._ffcv())

    @property
    def num_images(self) -> int:
        """Images per epoch (after drop_last)."""
        n = self.beton.count
        return (n // self.batch_size) * self.batch_size if self._opts["drop_last"] else n

    def state(self) -> dict[str, int]:
        """Where the loader is: epochs started and batches handed out of the last one."""
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue epoch `epoch - 1` after its first `batches_done` batches, in the same order
        (FFCV's order of an epoch depends only on seed and epoch): the next iteration yields
        exactly the batches an uninterrupted run would have had next."""
        self.epoch = max(epoch - 1, 0)
        self._skip = batches_done if epoch > 0 else 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = self._ffcv()
        loader.next_epoch = self.epoch  # FFCV's order is seeded by seed + epoch
        self.epoch += 1
        skip, self._skip = self._skip, 0
        order = loader.traversal_order
        if skip:  # FFCV samples the epoch's order when iteration starts: leave out its head
            loader.traversal_order = _SkipHead(order, skip * self.batch_size, len(loader) * self.batch_size)
        try:
            batches = iter(loader)
        finally:
            loader.traversal_order = order
        self.batches_done = skip
        try:
            for b in batches:
                self.batches_done += 1
                yield b
        finally:  # an epoch left early (a curriculum stage change, a benchmark window)
            _stop_epoch(batches)


class _SkipHead:
    """A traversal order without the first `skip` of the `used` indices an epoch would take."""

    def __init__(self, inner, skip: int, used: int):
        self.inner, self.skip, self.used = inner, skip, used

    def sample_order(self, epoch: int):
        return self.inner.sample_order(epoch)[:self.used][self.skip:]
