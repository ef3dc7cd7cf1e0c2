"""FFCV's random-resized crop, made reproducible: the same seed and order give the same crops.

FFCV 1.0.2's `RandomResizedCropRGBImageDecoder` draws crop boxes from Numba's per-thread
`np.random`, which it never seeds, and which thread decodes which image varies from run to run:
two runs with the same seed crop differently, and a resumed run cannot replay its crops.
`SeededRandomResizedCrop` keeps FFCV's decode loop (JPEG decode or raw read, then
`resize_crop`) and the torchvision sampling rule of `get_random_crop` (10 tries of area and
log-aspect, then a centre crop clamped to the ratio range), but takes its uniforms from a
counter-based hash (SplitMix64) of (seed, the batch's indices, the image's index): no state,
the same on every thread. A batch's indices come from FFCV's order, which depends on the loader
seed and the epoch, so an image gets a new crop every epoch and the same one in a rerun.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, RandomResizedCropRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.compiler import Compiler

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@nb.njit(nogil=True, cache=True)
def mix(x):
    """SplitMix64's finalizer of x + golden ratio (uint64 -> uint64, wrapping)."""
    z = np.uint64(x) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@nb.njit(nogil=True, cache=True)
def uniform(key, k, lo, hi):
    """The k-th uniform in [lo, hi) of the stream named by key (53 random bits)."""
    u = np.float64(mix(key ^ mix(np.uint64(k))) >> np.uint64(11)) / 9007199254740992.0  # 53 bits / 2**53
    return lo + (hi - lo) * u


@nb.njit(nogil=True, cache=True)
def seeded_crop(height, width, scale, ratio, key):
    """(i, j, h, w) of a random-resized crop, torchvision's rule, uniforms from `key`."""
    area = height * width
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    for t in range(10):
        target_area = area * uniform(key, 4 * t, scale[0], scale[1])
        aspect = np.exp(uniform(key, 4 * t + 1, log_lo, log_hi))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(uniform(key, 4 * t + 2, 0.0, height - h + 1))
            j = int(uniform(key, 4 * t + 3, 0.0, width - w + 1))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < ratio[0]:
        w = width
        h = int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        h = height
        w = int(round(h * ratio[1]))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w


class SeededRandomResizedCrop(RandomResizedCropRGBImageDecoder):
    """`RandomResizedCropRGBImageDecoder` with crops that depend only on seed, batch and image.

    Args:
        output_size: (height, width) of the output.
        scale: range of the crop's area fraction.
        ratio: range of the crop's aspect ratio (width / height).
        seed: seed of the crops (combined with each batch's indices).
    """

    def __init__(self, output_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed: int = 0):
        super().__init__(output_size, scale=scale, ratio=ratio)
        self.seed = seed

    def generate_code(self):
        # FFCV's ResizedCropRGBImageDecoder.generate_code, with the crop box from seeded_crop
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        scale = np.array(self.scale, dtype=np.float64)
        ratio = np.array(sorted(self.ratio), dtype=np.float64)
        seed = np.uint64(mix(np.uint64(self.seed)))  # np.uint64: a Python int above 2**63 would type as float

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            batch_key = seed
            for t in range(len(batch_indices)):
                batch_key = mix(batch_key ^ np.uint64(batch_indices[t]))
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height = np.uint32(field["height"])
                width = np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp_buffer = temp_storage[dst_ix]
                    imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                    selected_size = 3 * height * width
                    temp_buffer = temp_buffer.reshape(-1)[:selected_size]
                    temp_buffer = temp_buffer.reshape(height, width, 3)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                i, j, h, w = seeded_crop(height, width, scale, ratio, mix(batch_key ^ np.uint64(source_ix)))
                resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode
