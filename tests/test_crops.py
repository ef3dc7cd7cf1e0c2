"""pipeline/crops.py: FFCV's random-resized crop with seeded, thread-independent crop boxes."""
import numba as nb
import numpy as np
import pytest
from ffcv.fields.rgb_image import get_random_crop as _ffcv_crop

from pipeline.crops import mix, seeded_crop
from pipeline.data import BetonSet


get_random_crop = nb.njit(_ffcv_crop)  # FFCV compiles it the same way (Compiler.compile)


@nb.njit
def ffcv_boxes(n, height, width, scale, ratio):
    np.random.seed(0)
    out = np.empty((n, 4))
    for k in range(n):
        i, j, h, w = get_random_crop(height, width, scale, ratio)
        out[k, 0], out[k, 1], out[k, 2], out[k, 3] = i, j, h, w
    return out


@nb.njit
def boxes(n, height, width, scale, ratio):
    out = np.empty((n, 4))
    for k in range(n):
        i, j, h, w = seeded_crop(height, width, scale, ratio, mix(np.uint64(k)))
        out[k, 0], out[k, 1], out[k, 2], out[k, 3] = i, j, h, w
    return out


@pytest.mark.parametrize("height, width", [(375, 500), (500, 375), (30, 40)])
def test_seeded_boxes_follow_ffcvs_distribution(height, width):
    scale, ratio = np.array([0.08, 1.0]), np.array([3 / 4, 4 / 3])
    ours, theirs = boxes(20000, height, width, scale, ratio), ffcv_boxes(20000, height, width, scale, ratio)
    i, j, h, w = ours.T
    assert (i >= 0).all() and (j >= 0).all() and (i + h <= height).all() and (j + w <= width).all()
    assert (h > 0).all() and (w > 0).all()
    for stat in (lambda b: b[:, 2] * b[:, 3] / (height * width),  # area fraction
                 lambda b: np.log(b[:, 3] / b[:, 2]),  # log aspect
                 lambda b: (b[:, 0] + b[:, 2] / 2) / height):  # vertical centre
        a, t = stat(ours), stat(theirs)
        assert a.mean() == pytest.approx(t.mean(), abs=0.01) and a.std() == pytest.approx(t.std(), abs=0.01)


def test_same_seed_same_crops_whatever_the_threads(tiny_betons):
    bs = BetonSet(tiny_betons)  # images of jittered sizes: crop positions are random

    def epochs(seed, workers):
        loader = bs.loader("train", batch_size=8, output_size=16, num_workers=workers, seed=seed)
        return [[x.clone() for x, _ in loader] for _ in range(2)]
    a, b, c = epochs(3, 1), epochs(3, 2), epochs(2**40, 1)  # any seed types as uint64 in the decoder
    for ea, eb in zip(a, b):
        assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(ea, eb))
    assert not all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a[0], c[0]))  # another seed
    assert not all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a[0], a[1]))  # another epoch
