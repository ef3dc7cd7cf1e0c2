"""Analytic forward FLOPs and parameter counts of a vitday ViT.

FLOPs count a multiply-add as 2 and include what torch.utils.flop_counter.FlopCounterMode counts:
matmuls (patch embedding, qkv, attention scores and values, projections, MLP, head) and convolutions
(the locality depthwise conv). Norms, activations, softmax, residual adds and the position-embedding
resample are left out: well under 1 % of the total for ViT-S at any curriculum size. Training FLOPs per
image = 3 x forward (backward costs two matmuls per forward matmul).

For ViT-S/16 at 224 px (N = 197 tokens, D = 384, L = 12):
    patch embed    2 * 196 * (3*16*16) * D
    per block      2*N*D*3D (qkv) + 2*2*N^2*D (QK^T, AV) + 2*N*D^2 (proj) + MLP
    MLP, plain     2 * 2 * N * D * 4D
    MLP, locality  2 * 2 * (N-1) * D * 4D + 2 * (N-1) * 4D * 9   (the class token skips it;
                   with cls_path="pointwise" the linears see all N tokens)
    head           2 * D * classes

With class-token pooling and the class token skipping the locality MLP, LocalityViT computes the last
block for the class token alone (``last_block_cls_only``; model/vit.py): that block counts
2*D*D (its query) + 2*N*D*2D (keys, values) + 2*2*N*D (one attention row) + 2*D*D (proj), no MLP.
These are the FLOPs executed, which MFU divides by.
"""
from typing import Tuple, Union

import torch.nn as nn

from .locality import LocalityMlp


def count_params(net: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (trainable ones by default)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def forward_flops(net: nn.Module, img_size: Union[int, Tuple[int, int]]) -> int:
    """Analytic forward FLOPs for one image at ``img_size`` (multiply-add = 2 FLOPs).

    Args:
        net: a timm VisionTransformer (any vitday variant, or timm's own ViTs with the standard blocks).
        img_size: side length, or (height, width), in pixels; must be a multiple of the patch size.
    """
    H, W = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    ph, pw = net.patch_embed.patch_size
    if H % ph or W % pw:
        raise ValueError(f"img_size {H}x{W} is not a multiple of the patch size {ph}x{pw}")
    grid = (H // ph) * (W // pw)
    prefix = net.num_prefix_tokens
    N = grid + prefix  # tokens in the sequence
    D = net.embed_dim
    proj = net.patch_embed.proj
    flops = 2 * grid * (proj.in_channels * ph * pw) * D
    cls_only = getattr(net, 'last_block_cls_only', lambda: False)()
    for i, blk in enumerate(net.blocks):
        qkv_out = blk.attn.qkv.out_features
        if cls_only and i == len(net.blocks) - 1:  # model/vit.py: the class token's row alone, no MLP
            dim = qkv_out // 3
            flops += 2 * D * dim + 2 * N * D * 2 * dim  # its query; every token's keys and values
            flops += 2 * 2 * N * dim  # one row of q @ k^T and of attn @ v
            flops += 2 * blk.attn.proj.in_features * blk.attn.proj.out_features
            continue
        flops += 2 * N * D * qkv_out  # qkv
        flops += 2 * 2 * N * N * (qkv_out // 3)  # q @ k^T and attn @ v, all heads
        flops += 2 * N * blk.attn.proj.in_features * blk.attn.proj.out_features
        mlp = blk.mlp
        if isinstance(mlp, LocalityMlp):
            hidden = mlp.fc1.out_features
            k = mlp.conv.kernel_size[0] * mlp.conv.kernel_size[1]
            tokens = N if mlp.cls_path == 'pointwise' else grid  # prefix tokens skip it in the paper
            flops += 2 * tokens * (mlp.fc1.in_features * hidden + hidden * mlp.fc2.out_features)
            flops += 2 * grid * hidden * k  # depthwise conv: k multiply-adds per output element
        else:
            flops += 2 * N * (mlp.fc1.in_features * mlp.fc1.out_features + mlp.fc2.in_features * mlp.fc2.out_features)
    if isinstance(net.head, nn.Linear):
        flops += 2 * net.head.in_features * net.head.out_features
    return flops


def train_flops(net: nn.Module, img_size: Union[int, Tuple[int, int]]) -> int:
    """Forward + backward FLOPs per image: 3 x ``forward_flops``."""
    return 3 * forward_flops(net, img_size)
