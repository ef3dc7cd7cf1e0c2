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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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

DEFAULT_CROP_RATIO = 224 / 256  # centre crop of the val images, as in DeiT/ffcv-imagenet


class ManifestError(ValueError):
    """manifest.json is missing, unreadable or inconsistent with the betons beside it."""


@dataclass(frozen=True)
class BetonInfo:
    split: str
    resolution: int
    path: Path
    mode: str
    count: int


class BetonSet:
    """A folder of betons and the manifest.json that describes them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        try:
            m = json.loads(path.read_text())
        except FileNotFoundError:
            raise ManifestError(f"{path}: not found (write the set with tools/write_beton.py)") from None
        except ValueError as e:
            raise ManifestError(f"{path}: not valid JSON ({e})") from None
        try:
            self.classes: list[str] = list(m["classes"])
            self.betons = [BetonInfo(b["split"], int(b["resolution"]), self.root / b["path"],
                                     b["mode"], int(b["count"])) for b in m["betons"]]
            self._counts = {s: int(v["count"]) for s, v in m["splits"].items()}
        except (KeyError, TypeError) as e:
            raise ManifestError(f"{path}: missing or malformed field {e}") from None
        for b in self.betons:
            if not b.path.is_file():
                raise ManifestError(f"{path}: lists {b.path.name}, which is not in {self.root}")
        self.manifest = m

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def count(self, split: str) -> int:
        self._check_split(split)
        return self._counts[split]

    def resolutions(self, split: str) -> list[int]:
        self._check_split(split)
        return sorted(b.resolution for b in self.betons if b.split == split)

    def beton_for(self, split: str, output_size: int) -> BetonInfo:
        """The smallest beton of the split whose resolution serves output_size (or the
        largest there is: images are never stored above their source size anyway)."""
        self._check_split(split)
        ours = sorted((b for b in self.betons if b.split == split), key=lambda b: b.resolution)
        for b in ours:
            if b.resolution >= output_size:
                return b
        return ours[-1]

    def loader(self, split: str, batch_size: int, output_size: int, num_workers: int = 0,
               device: torch.device | str | None = None, seed: int = 0,
               drop_last: bool | None = None, distributed: bool = False,
               scale: tuple[float, float] = (0.08, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3),
               crop_ratio: float = DEFAULT_CROP_RATIO, os_cache: bool = True,
               batches_ahead: int = 3, shard: tuple[int, int] | None = None) -> "BetonLoader":
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
                           batches_ahead=batches_ahead, shard=shard)

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
                 batches_ahead: int, shard: tuple[int, int] | None = None):
        self.bset, self.split, self.batch_size, self.train = bset, split, batch_size, train
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
        self.beton = self.bset.beton_for(self.split, self.output_size)

    def _ffcv(self):
        from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import Squeeze, ToDevice, ToTensor, ToTorchImage

        key = self.beton.path
        if key not in self._built:
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
            manifest = self.bset.manifest["fields"]
            indices = None
            if self._shard is not None:
                rank, world = self._shard
                indices = list(range(rank, self.beton.count, world))
            loader = Loader(str(key), batch_size=self.batch_size, order=order,
                            pipelines={manifest["image"]: image, manifest["label"]: label},
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
