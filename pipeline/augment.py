"""Batched augmentation on the training device, after the FFCV loader.

Everything here is tensor code over the whole batch (no Python loop over images), so the
same code runs on the GPU in training and on the CPU in tests. The recipe is timm's / DeiT's
(https://github.com/huggingface/pytorch-image-models, timm/data/), done per batch:

    uint8 (B, 3, H, W) -> flip -> RandAugment -> normalize -> random erasing -> mixup / cutmix
                                                  -> float32 (B, 3, H, W), soft targets (B, K)

Randomness: per-sample draws come from one torch.Generator on the device (no host syncs);
the per-batch mixup/cutmix draws (one Beta lambda and one box) come from a NumPy generator
on the host, as timm's `Mixup(mode='batch')` does. Both are seeded from `seed`, so a run is
reproducible given the seed and the sequence of batches.

`strength` in [0, 1] (the trainer ramps it with progress) multiplies the RandAugment
magnitude, the mixup/cutmix probability and the erasing probability; RandAugment ops that
have no magnitude (AutoContrast, Equalize, Invert) are applied with their probability
multiplied by strength. strength = 0 leaves flip + normalize only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# RandAugment ops: timm's _RAND_INCREASING_TRANSFORMS ('rand-m9-mstd0.5-inc1', DeiT's
# setting), where a larger magnitude is always a stronger change. Colour ops act per pixel
# (or per image statistic); geometric ops are composed into one affine map per sample.
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
       "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY")
(AUTOCONTRAST, EQUALIZE, INVERT, ROTATE, POSTERIZE, SOLARIZE, SOLARIZE_ADD, COLOR, CONTRAST,
 BRIGHTNESS, SHARPNESS, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y) = range(len(OPS))
MAGNITUDE_FREE_OPS = (AUTOCONTRAST, EQUALIZE, INVERT)
GEOMETRIC_OPS = (ROTATE, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y)
MAX_MAGNITUDE = 10.0  # timm's _LEVEL_DENOM: magnitudes are on a 0-10 scale
ERASE_ATTEMPTS = 10  # timm's RandomErasing tries 10 boxes and keeps the first that fits


# ----------------------------------------------------------------------------------------
# RandAugment ops: pure functions of a float image batch in [0, 255] and per-sample params


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma as PIL's convert('L'): (B, 3, H, W) -> (B, 1, H, W)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageFilter.SMOOTH (3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13) with the border
    pixels kept, as ImageEnhance.Sharpness uses it. x: (B, 3, H, W)."""
    H, W = x.shape[-2:]
    if H < 3 or W < 3:
        return x
    # 3x3 box sum (separable, as shifted slices: much faster on CPU than avg_pool2d or a
    # grouped conv, and fused when compiled) + 4 x centre
    r = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
    box = r[..., :-2, :] + r[..., 1:-1, :] + r[..., 2:, :]
    inner = (box + 4.0 * x[..., 1:-1, 1:-1]) / 13.0
    return F.pad(inner, (1, 1, 1, 1)) + _border(H, W, x.device) * x


def _border(H: int, W: int, device: torch.device) -> torch.Tensor:
    """(H, W) float mask, 1 on the outermost pixels."""
    rows = torch.arange(H, device=device).view(H, 1)
    cols = torch.arange(W, device=device).view(1, W)
    return ((rows == 0) | (rows == H - 1) | (cols == 0) | (cols == W - 1)).float()


def _equalize_lut(idx: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize as a lookup table per channel.

    lut[v] = (step // 2 + sum(hist[:v])) // step with step = (N - hist[last nonzero]) // 255;
    step == 0 (a near-constant channel) gives the identity. hist: (B, C, 256) counts (float);
    the table comes back in hist's dtype.

    In integers: the quotients are often exact, and inductor's float division on CUDA (approximate,
    or a multiply by the reciprocal) can land just below one, which floor would move a grey level.
    """
    h = hist.long()
    levels = torch.arange(256, device=hist.device)
    last = torch.where(h > 0, levels, -1).amax(dim=-1, keepdim=True)
    step = (idx.shape[-1] - h.gather(-1, last)) // 255
    lut = (torch.cumsum(h, -1) - h + step // 2) // step.clamp(min=1)
    return torch.where(step > 0, lut.clamp(max=255), levels).to(hist.dtype)


def color_op(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor,
             sign: torch.Tensor) -> torch.Tensor:
    """Apply one colour op per sample; samples whose op is geometric or -1 pass unchanged.

    Like PIL (which timm's RandAugment runs), the image is integer-valued between ops. All
    ops but Color and Sharpness are per-channel maps of the pixel value, so they are built
    as one 256-entry lookup table per sample and channel (tiny tensors, selected per
    sample with `where`) and applied with one gather; Color and Sharpness are blends.

    Magnitude conventions follow timm's increasing ops (m on 0-10, f = m / 10):
    enhance factor k = max(0.1, 1 + sign * 0.9 f) for Color/Contrast/Brightness/Sharpness,
    Solarize threshold 256 - floor(256 f), SolarizeAdd adds floor(110 f) below 128.
    Posterize keeps 8 - round(4 f) bits (torchvision's range 8..4, identity at m = 0;
    timm's PosterizeIncreasing keeps 4..0 bits and is not the identity at m = 0).

    Args:
        x: float (B, 3, H, W), integer values in [0, 255].
        op: int64 (B,) index into OPS, or -1 for no op.
        magnitude: float (B,) in [0, 10].
        sign: float (B,) of +-1, the random direction of signed ops.
    Returns:
        float (B, 3, H, W), integer values in [0, 255].
    """
    B, C, H, W = x.shape
    o = op.view(B, 1, 1)
    f = (magnitude / MAX_MAGNITUDE).view(B, 1, 1)
    k = (1.0 + 0.9 * f * sign.view(B, 1, 1)).clamp(min=0.1)
    idx = x.reshape(B, C, H * W).long()
    hist = torch.zeros(B, C, 256, device=x.device, dtype=x.dtype)
    hist.scatter_add_(-1, idx, torch.ones_like(x).view(B, C, H * W))  # counts < 2^24: exact
    gray = _gray(x)  # (B, 1, H, W)

    v = torch.arange(256, device=x.device, dtype=x.dtype).expand(B, C, 256)  # identity table
    lo = x.amin(dim=(2, 3)).unsqueeze(-1)  # (B, C, 1)
    hi = x.amax(dim=(2, 3)).unsqueeze(-1)
    contrast_mean = torch.floor(gray.mean(dim=(1, 2, 3)).view(B, 1, 1) + 0.5)
    q = torch.exp2(torch.round(4.0 * f))  # posterize quantum: 2^(8 - bits)
    thresh = 256.0 - torch.floor(256.0 * f)
    add = torch.floor(110.0 * f)
    lut = torch.where(o == BRIGHTNESS, k * v,
          torch.where(o == CONTRAST, contrast_mean + k * (v - contrast_mean),
          torch.where(o == POSTERIZE, torch.floor(v / q) * q,
          torch.where((o == SOLARIZE) & (v >= thresh), 255.0 - v,
          torch.where((o == SOLARIZE_ADD) & (v < 128), v + add,
          torch.where(o == INVERT, 255.0 - v,
          torch.where((o == AUTOCONTRAST) & (hi > lo), (v - lo) * (255.0 / (hi - lo).clamp(min=1)),
          torch.where(o == EQUALIZE, _equalize_lut(idx, hist), v))))))))
    lut = torch.round(lut).clamp(0, 255)
    out = lut.gather(-1, idx).view(B, C, H, W)

    # Color and Sharpness (identity tables above, so out == x there) blend with a
    # degenerate image as PIL's ImageEnhance: deg + k (x - deg); elsewhere deg = out.
    ob = o.view(B, 1, 1, 1)
    blend = (ob == COLOR) | (ob == SHARPNESS)
    deg = torch.where(ob == COLOR, gray, torch.where(ob == SHARPNESS, _smooth(x), out))
    out = deg + torch.where(blend, k.view(B, 1, 1, 1), 1.0) * (out - deg)
    return torch.round(out).clamp(0, 255)


def geometric_theta(op: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor,
                    H: int, W: int) -> torch.Tensor:
    """Per-sample affine map (output -> input) of one geometric op, for F.affine_grid.

    In pixel units about the image centre: Rotate by 30 f degrees, ShearX/Y by 0.3 f,
    TranslateX/Y by 0.45 f of the width/height (timm's ranges, f = sign * m / 10; timm
    shears about the top-left corner, we shear about the centre). Non-geometric ops give
    the identity. The map is conjugated to affine_grid's normalized coordinates
    (align_corners=False), so rotations stay rotations on non-square images.

    Args:
        op: int64 (B,) index into OPS (or -1).
        magnitude: float (B,) in [0, 10]; sign: float (B,) of +-1.
        H, W: image size.
    Returns:
        float (B, 3, 3) homogeneous matrices.
    """
    f = sign * magnitude / MAX_MAGNITUDE
    ang = f * (30.0 * math.pi / 180.0)
    one, zero = torch.ones_like(f), torch.zeros_like(f)
    rot = op == ROTATE
    a = torch.where(rot, torch.cos(ang), one)
    b = torch.where(rot, -torch.sin(ang), torch.where(op == SHEAR_X, 0.3 * f, zero))
    d = torch.where(rot, torch.sin(ang), torch.where(op == SHEAR_Y, 0.3 * f, zero))
    e = a
    tx = torch.where(op == TRANSLATE_X, 0.45 * f * W, zero)
    ty = torch.where(op == TRANSLATE_Y, 0.45 * f * H, zero)
    # Pixel p = S n with S = diag(W/2, H/2): theta = S^-1 M S.
    theta = torch.stack([
        torch.stack([a, b * (H / W), tx * (2.0 / W)], -1),
        torch.stack([d * (W / H), e, ty * (2.0 / H)], -1),
        torch.stack([zero, zero, one], -1),
    ], -2)
    return theta  # (B, 3, 3)


def rand_augment(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor,
                 fill: torch.Tensor) -> torch.Tensor:
    """RandAugment with per-sample op choices, batched.

    All geometric ops a sample drew are composed into one affine map and applied first, by
    one grid_sample (bilinear, outside filled with `fill`); then the colour ops run in slot
    order. (timm runs ops strictly in the drawn order; the difference is that colour ops
    with image statistics see the already warped image.) Samples that drew no geometric op
    skip the resampling exactly.

    Args:
        x: float (B, 3, H, W), integer values in [0, 255].
        op: int64 (N, B): op index per slot and sample, -1 where the op is not applied.
        magnitude: float (N, B) in [0, 10]; sign: float (N, B) of +-1.
        fill: float (1, 3, 1, 1) colour for pixels warped in from outside.
    Returns:
        float (B, 3, H, W), integer values in [0, 255].
    """
    B, _, H, W = x.shape
    theta = geometric_theta(op[0], magnitude[0], sign[0], H, W)
    for n in range(1, op.shape[0]):  # inverse maps compose in slot order: M0 @ M1 @ ...
        theta = theta @ geometric_theta(op[n], magnitude[n], sign[n], H, W)
    is_geo = torch.zeros_like(op, dtype=torch.bool)
    for g in GEOMETRIC_OPS:
        is_geo = is_geo | (op == g)
    # F.affine_grid by hand: pixel centres in normalized coordinates (align_corners=False);
    # elementwise, so it fuses when compiled and is faster than affine_grid's bmm on CPU
    xs = ((2 * torch.arange(W, device=x.device) + 1) / W - 1).to(x.dtype).view(1, 1, W)
    ys = ((2 * torch.arange(H, device=x.device) + 1) / H - 1).to(x.dtype).view(1, H, 1)
    t = theta.view(B, 9, 1, 1)
    grid = torch.stack([t[:, 0] * xs + t[:, 1] * ys + t[:, 2],
                        t[:, 3] * xs + t[:, 4] * ys + t[:, 5]], dim=-1)  # (B, H, W, 2)
    warped = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False) + fill
    warped = torch.round(warped).clamp(0, 255)  # integer-valued between ops, as PIL
    x = torch.where(is_geo.any(0).view(B, 1, 1, 1), warped, x)
    for n in range(op.shape[0]):
        x = color_op(x, op[n], magnitude[n], sign[n])
    return x


def allow_static_graphs(limit: int = 64) -> None:
    """Let torch.compile keep `limit` static graphs per function (one per input shape: curriculum
    sizes, eval sizes, partial batches) before it gives up compiling (torch's default: 8)."""
    import torch._dynamo.config as dc
    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
        if hasattr(dc, name):
            setattr(dc, name, max(getattr(dc, name), limit))


# ----------------------------------------------------------------------------------------
# Config


@dataclass
class AugmentConfig:
    """The `augment` section of the training config. Defaults are DeiT's ImageNet recipe.

    mean and std are per-channel in 0-1 units (timm's IMAGENET_DEFAULT_MEAN/STD); the
    uint8 input is divided by 255 before normalizing.
    """
    flip: bool = True                   # random horizontal flip, p = 0.5 per sample
    randaug_ops: int = 2                # ops per sample (timm's n); 0 turns RandAugment off
    randaug_magnitude: float = 9.0      # timm's m, on the 0-10 scale
    randaug_magnitude_std: float = 0.5  # per-op Gaussian noise on the magnitude (timm's mstd)
    randaug_prob: float = 0.5           # probability each drawn op is applied (timm's default)
    mixup_alpha: float = 0.8            # Beta(alpha, alpha) for mixup; 0 turns mixup off
    cutmix_alpha: float = 1.0           # Beta(alpha, alpha) for cutmix; 0 turns cutmix off
    mix_prob: float = 1.0               # probability a batch is mixed at all (times strength)
    switch_prob: float = 0.5            # probability of cutmix rather than mixup when both are on
    label_smoothing: float = 0.1        # target = (1 - s) one_hot + s / K, then mixed
    erase_prob: float = 0.25            # per-sample probability of random erasing
    erase_mode: Literal["pixel", "rand", "const"] = "pixel"  # erased: N(0,1) per pixel, per channel, or 0
    mean: tuple[float, float, float] = IMAGENET_MEAN  # 0-1 units
    std: tuple[float, float, float] = IMAGENET_STD    # 0-1 units

    def __post_init__(self):
        def bad(name, expected, got):
            raise ValueError(f"augment.{name}: expected {expected}, got {got!r}")

        def number(name, lo=None, hi=None, hi_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                bad(name, "a number", v)
            if (lo is not None and v < lo) or (hi is not None and (v >= hi if hi_open else v > hi)):
                if hi is None:
                    bad(name, f">= {lo}", v)
                bad(name, f"in [{lo}, {hi}{')' if hi_open else ']'}", v)
            setattr(self, name, float(v))

        if not isinstance(self.flip, bool):
            bad("flip", "true or false", self.flip)
        if isinstance(self.randaug_ops, bool) or not isinstance(self.randaug_ops, int) or self.randaug_ops < 0:
            bad("randaug_ops", "an integer >= 0", self.randaug_ops)
        number("randaug_magnitude", 0, int(MAX_MAGNITUDE))
        number("randaug_magnitude_std", 0)
        number("randaug_prob", 0, 1)
        number("mixup_alpha", 0)
        number("cutmix_alpha", 0)
        number("mix_prob", 0, 1)
        number("switch_prob", 0, 1)
        number("label_smoothing", 0, 1, hi_open=True)
        number("erase_prob", 0, 1)
        if self.erase_mode not in ("pixel", "rand", "const"):
            bad("erase_mode", "one of 'pixel', 'rand', 'const'", self.erase_mode)
        for name in ("mean", "std"):
            v = getattr(self, name)
            if (not isinstance(v, (tuple, list)) or len(v) != 3
                    or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v)):
                bad(name, "3 numbers (per channel, 0-1 units)", v)
            setattr(self, name, tuple(float(c) for c in v))
        if not all(0 <= m <= 1 for m in self.mean):
            bad("mean", "values in [0, 1] (0-1 units, not 0-255)", self.mean)
        if not all(0 < s <= 1 for s in self.std):
            bad("std", "values in (0, 1] (0-1 units, not 0-255)", self.std)


# ----------------------------------------------------------------------------------------
# The batch augmenter


class BatchAugment:
    """Train-time and eval-time batch transforms on one device.

    Args:
        cfg: AugmentConfig.
        num_classes: K, the width of the soft targets.
        device: where the batches live (and the generator, and the compiled code).
        seed: seeds the device torch.Generator (per-sample draws) and the host NumPy
            generator (per-batch mixup/cutmix draws).
        compile: wrap the tensor parts in torch.compile. Default: True on CUDA, False
            elsewhere. Static shapes (dynamic=False): one graph per input shape (a curriculum
            size, the eval size and its last partial batch), each compiled once, not per step;
            the code generated for one size is the code the CUDA tests check (a dynamic-shape
            graph would be first generated on the GPU at the run's second size).
    """

    def __init__(self, cfg: AugmentConfig, num_classes: int, device: torch.device | str = "cpu",
                 seed: int = 0, compile: bool | None = None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected an integer >= 1, got {num_classes!r}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        mean = torch.tensor(cfg.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std, device=self.device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)  # x_norm = x_uint8 * scale + shift
        self._shift = -mean / std
        self._fill = torch.round(255.0 * mean)  # RandAugment fill (timm: img_mean), 0-255
        n = cfg.randaug_ops
        # uniform columns per sample: flip | op choice, apply, sign per slot | erase box draws
        self._cols = {"flip": 0, "op": 1, "apply": 1 + n, "sign": 1 + 2 * n, "erase": 1 + 3 * n}
        self._num_uniform = 1 + 3 * n + 1 + 4 * ERASE_ATTEMPTS
        free = torch.zeros(len(OPS), dtype=torch.bool)
        free[list(MAGNITUDE_FREE_OPS)] = True
        self._magnitude_free = free.to(self.device)
        if compile is None:
            compile = self.device.type == "cuda"
        self.compiled = bool(compile)
        if compile:
            allow_static_graphs()
        self._core = torch.compile(self._augment, dynamic=False) if compile else self._augment
        self._normalize = torch.compile(self._norm, dynamic=False) if compile else self._norm

    # -- tensor parts (pure functions of the input and the random draws; compiled) --------

    def _norm(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self._scale + self._shift

    def _augment(self, images: torch.Tensor, u: torch.Tensor, z: torch.Tensor | None,
                 noise: torch.Tensor | None, strength: torch.Tensor, randaug: bool,
                 erase: bool) -> torch.Tensor:
        cfg, c = self.cfg, self._cols
        B, _, H, W = images.shape
        x = images.float()  # (B, 3, H, W) in [0, 255]
        if cfg.flip:
            x = torch.where((u[:, c["flip"]] < 0.5).view(B, 1, 1, 1), x.flip(3), x)
        if randaug:
            n = cfg.randaug_ops
            op = (u[:, c["op"]:c["op"] + n] * len(OPS)).long().clamp(max=len(OPS) - 1).T  # (n, B)
            # ops without a magnitude fade in with strength through their probability
            p = cfg.randaug_prob * torch.where(self._magnitude_free[op], strength, 1.0)
            op = torch.where(u[:, c["apply"]:c["apply"] + n].T < p, op, -1)
            mag = (cfg.randaug_magnitude + cfg.randaug_magnitude_std * z.T).clamp(0, MAX_MAGNITUDE)
            sign = torch.where(u[:, c["sign"]:c["sign"] + n].T < 0.5, -1.0, 1.0)
            x = rand_augment(x, op, mag * strength, sign, self._fill)
        x = x * self._scale + self._shift
        if erase:
            x = self._erase(x, u[:, c["erase"]:], noise, strength)
        return x

    def _erase(self, x: torch.Tensor, u: torch.Tensor, noise: torch.Tensor,
               strength: torch.Tensor) -> torch.Tensor:
        """timm's RandomErasing (count 1, area 0.02-1/3, log aspect ratio +-log 3), batched:
        each sample draws 10 boxes and erases the first that fits, if any."""
        B, _, H, W = x.shape
        k = ERASE_ATTEMPTS
        area = H * W * (0.02 + (1 / 3 - 0.02) * u[:, 1:1 + k])
        aspect = torch.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u[:, 1 + k:1 + 2 * k])
        h = torch.round(torch.sqrt(area * aspect))
        w = torch.round(torch.sqrt(area / aspect))
        fits = (h < H) & (w < W)
        first = torch.argmax(fits.int(), dim=1, keepdim=True)  # first fitting attempt
        h, w = h.gather(1, first), w.gather(1, first)  # (B, 1)
        top = torch.floor(u[:, 1 + 2 * k:2 + 2 * k] * (H - h + 1)).clamp(max=H - h)
        left = torch.floor(u[:, 1 + 3 * k:2 + 3 * k] * (W - w + 1)).clamp(max=W - w)
        on = (u[:, 0:1] < self.cfg.erase_prob * strength) & fits.any(1, keepdim=True)
        rows = torch.arange(H, device=x.device).view(1, H, 1)
        cols = torch.arange(W, device=x.device).view(1, 1, W)
        box = ((rows >= top.view(B, 1, 1)) & (rows < (top + h).view(B, 1, 1))
               & (cols >= left.view(B, 1, 1)) & (cols < (left + w).view(B, 1, 1)))
        box = box & on.view(B, 1, 1)
        return torch.where(box.unsqueeze(1), noise, x)

    # -- public API ---------------------------------------------------------------------

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """Normalize a uint8 batch (B, 3, H, W) to float32, nothing else."""
        self._check(images)
        return self._normalize(images)

    def train(self, images: torch.Tensor, labels: torch.Tensor,
              strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a training batch.

        Args:
            images: uint8 (B, 3, H, W) on the device (not modified).
            labels: int64 (B,) class indices on the device.
            strength: in [0, 1]; scales RandAugment magnitude, mix and erase probabilities.
        Returns:
            x: float32 (B, 3, H, W) normalized; y: float32 (B, K) soft targets summing to 1.
        """
        self._check(images)
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}")
        strength = float(strength)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength: expected in [0, 1], got {strength}")
        cfg, dev, g = self.cfg, self.device, self.generator
        B, _, H, W = images.shape
        randaug = cfg.randaug_ops > 0 and cfg.randaug_prob > 0 and strength > 0
        erase = cfg.erase_prob * strength > 0
        u = torch.rand(B, self._num_uniform, device=dev, generator=g)
        z = torch.randn(B, cfg.randaug_ops, device=dev, generator=g) if randaug else None
        noise = None
        if erase:
            shape = (B, 3, H, W) if cfg.erase_mode == "pixel" else (B, 3, 1, 1)
            noise = (torch.zeros(shape, device=dev) if cfg.erase_mode == "const"
                     else torch.randn(shape, device=dev, generator=g))
        # a fill kernel, not a host-to-device copy: no sync
        s = torch.full((), strength, device=dev)
        x = self._core(images, u, z, noise, s, randaug, erase)
        return self._mix(x, labels, strength)

    def _mix(self, x: torch.Tensor, labels: torch.Tensor,
             strength: float) -> tuple[torch.Tensor, torch.Tensor]:
        """timm's Mixup(mode='batch', correct_lam=True): one lambda per batch, drawn on the
        host; the partner of sample i is sample B-1-i (the batch flipped)."""
        cfg, rng = self.cfg, self.rng
        lam = 1.0
        if (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0) and rng.random() < cfg.mix_prob * strength:
            if cfg.mixup_alpha > 0 and cfg.cutmix_alpha > 0:
                cutmix = rng.random() < cfg.switch_prob
            else:
                cutmix = cfg.cutmix_alpha > 0
            alpha = cfg.cutmix_alpha if cutmix else cfg.mixup_alpha
            lam = float(rng.beta(alpha, alpha))
            if cutmix:
                # timm's rand_bbox: a box of side sqrt(1 - lam), centre uniform, clipped to the
                # image; lambda corrected to the kept area
                H, W = x.shape[-2:]
                ratio = math.sqrt(1.0 - lam)
                ch, cw = int(H * ratio), int(W * ratio)
                cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
                yl, yh = max(cy - ch // 2, 0), min(cy + (ch + 1) // 2, H)
                xl, xh = max(cx - cw // 2, 0), min(cx + (cw + 1) // 2, W)
                x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
                lam = 1.0 - (yh - yl) * (xh - xl) / float(H * W)
            else:
                x = x * lam + x.flip(0) * (1.0 - lam)
        K, s = self.num_classes, cfg.label_smoothing
        y = torch.full((labels.shape[0], K), s / K, device=x.device, dtype=torch.float32)
        y.scatter_(1, labels.long().view(-1, 1), 1.0 - s + s / K)
        if lam != 1.0:
            y = y * lam + y.flip(0) * (1.0 - lam)
        return x, y

    def _check(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError("images: expected uint8 (B, 3, H, W), got "
                             f"{images.dtype} {tuple(images.shape)}")

    def state_dict(self) -> dict:
        """Generator states, to resume a run with the same augmentation stream."""
        return {"torch": self.generator.get_state(), "numpy": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> bool:
        """Restores state_dict()'s generator states and returns True; returns False and changes
        nothing when the torch state is another device type's (a CPU checkpoint continued on CUDA
        or the reverse: a CPU generator's state is 5,056 bytes, a CUDA one's 16, and set_state
        refuses the other's); then `reseed` starts new streams."""
        if state["torch"].numel() != self.generator.get_state().numel():
            return False
        self.generator.set_state(state["torch"])
        self.rng.bit_generator.state = state["numpy"]
        return True

    def reseed(self, seed: int) -> None:
        """New random streams (a resume that cannot continue the saved ones)."""
        self.generator.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
