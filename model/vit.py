"""The ViT of vitday: timm's VisionTransformer that runs at any multiple of its patch size.

One learned position embedding lives at the grid of ``img_size`` (224 px -> 14x14 for patch 16). Every
forward resamples it to the input's grid with timm's ``resample_abs_pos_embed`` (bicubic, antialiased,
fp32; it returns the parameter itself when the grid is unchanged), so the same parameter is trained at
every curriculum size. The paper's code re-created the embedding as a new Parameter at each size after the
optimizer was built, so it was never trained (shared/DESIGN.md); here gradients always reach it.

No cache of resampled embeddings: a cached tensor would cut the gradient to the parameter, and the
resample is one small interpolation (D x 14 x 14 values) that torch.compile puts in the graph.

With ``locality=True`` every block's MLP is ``model.locality.LocalityMlp`` (passed to timm's Block as
``mlp_layer``). That layer needs the token grid; ``forward_features`` sets it on the blocks' MLPs from
the input's static shape (Python ints under torch.compile: no graph break, a recompile per new size).

The last block for the class token alone (``cls_only_last``, on by default). With class-token pooling
and the class token skipping the locality MLP (the paper's model), nothing reads the patch tokens after
the last block's attention: ``forward`` computes that block for the class token only (its query, keys
and values of every token, attention of one row, the projection; the MLP gives it zero) and the same
logits come out (without dropout or drop path; with them, the same in distribution). For ViT-S/16 that is 1 of 12 blocks, ~7 % of the training FLOPs at every size; for the
3-block pico of the tests and the demo, ~28 %. ``forward_features`` still returns every token.
"""
import math
from functools import partial
from typing import Optional, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import Attention, Block, VisionTransformer

from .locality import LocalityMlp


class LocalityViT(VisionTransformer):
    """timm VisionTransformer with any-size input and an optional locality MLP.

    Args:
        locality: use ``LocalityMlp`` (depthwise 3x3 conv between the MLP linears) in every block.
        cls_path: with locality, what the class token gets from the MLP: "skip" (nothing, the paper; the
            last block's MLP then gets no gradient under token pooling) or "pointwise" (see model/locality.py).
        act_layer: MLP activation; None means h_swish (``nn.Hardswish``) with locality, as in the paper,
            and GELU without, as in DeiT / timm. Strings (``"gelu"``, ``"hard_swish"``) are resolved by timm.
        img_size: the grid the one stored position embedding lives on; inputs of other sizes resample it.
        cls_only_last: compute the last block for the class token alone where nothing else is read (see
            the module docstring); the logits are the same either way.
        **kwargs: everything timm's VisionTransformer takes (embed_dim, depth, num_heads, num_classes,
            drop_path_rate, qkv_bias, ...). ``dynamic_img_size`` is always on. ``weight_init`` also takes
            ``'xavier'``, the authors' init (see ``init_weights``).
    """

    def __init__(
            self,
            locality: bool = False,
            cls_path: str = 'skip',
            act_layer: Optional[Union[str, Type[nn.Module]]] = None,
            img_size: Union[int, Tuple[int, int]] = 224,
            cls_only_last: bool = True,
            **kwargs,
    ) -> None:
        if kwargs.pop('dynamic_img_size', True) is not True:
            raise ValueError("LocalityViT always resamples its position embedding (dynamic_img_size=True)")
        if kwargs.get('dynamic_img_pad', False):
            raise ValueError("dynamic_img_pad is not supported: inputs must be multiples of the patch size")
        if locality:
            num_prefix = int(kwargs.get('class_token', True)) + kwargs.get('reg_tokens', 0)
            kwargs['mlp_layer'] = partial(LocalityMlp, num_prefix_tokens=num_prefix, cls_path=cls_path)
            act_layer = act_layer or nn.Hardswish
        super().__init__(img_size=img_size, act_layer=act_layer, dynamic_img_size=True, **kwargs)
        self.locality = locality
        self.cls_only_last = cls_only_last
        self.register_load_state_dict_pre_hook(_resample_loaded_pos_embed)

    def init_weights(self, mode: str = '', needs_reset: bool = True) -> None:
        """timm's init modes (``''``: trunc_normal std 0.02 on Linear weights, zero biases), plus ``'xavier'``:
        the authors' init (github.com/BorealisAI/efficient-vit-training, models_vit/vision_transformer_all.py:
        timm's 2021 ``init_weights('')``, whose ``self.apply`` passes no module names, so the head is not
        zeroed). xavier_normal_ on every Linear weight (attention's q, k and v each as its own D x D layer, as
        theirs are; projection, MLP, head), PyTorch's defaults for biases, convolutions and norms, and
        xavier_normal_ on the class token (std ~0.051 for ViT-S) and the position embedding (its fan-in counts
        every token: std ~0.005)."""
        if (mode or self.weight_init_mode) != 'xavier':
            return super().init_weights(mode, needs_reset)
        for p in (self.pos_embed, self.cls_token, self.reg_token):
            if p is not None:
                nn.init.xavier_normal_(p)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm)):
                m.reset_parameters()  # in place: the locality conv keeps its channels-last weight
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
        for m in self.modules():  # after the Linear loop, which visits each qkv after its Attention
            if isinstance(m, Attention):  # their q, k and v are three Linear(D, D) (Attention_separate)
                for w in m.qkv.weight.chunk(3):
                    nn.init.xavier_normal_(w)  # in place on each third (init runs under no_grad)

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(self.patch_embed.patch_size)

    def grid_for(self, x: torch.Tensor) -> Tuple[int, int]:
        """The patch grid (rows, cols) of an input batch; ValueError for a shape this model cannot take."""
        if x.ndim != 4:
            raise ValueError(f"expected a batch of images (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        _, C, H, W = x.shape
        if C != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {C} (input shape {tuple(x.shape)})")
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {ph}x{pw}; "
                             f"expected H and W in multiples of {ph} (e.g. {max(ph, H // ph * ph)})")
        return H // ph, W // pw

    def set_grid(self, grid: Tuple[int, int]) -> None:
        """Tell the locality MLPs the token grid of the next forward (called by ``forward_features``)."""
        if self.locality:
            for blk in self.blocks:
                blk.mlp.grid_size = grid

    def forward_features(
            self,
            x: torch.Tensor,
            attn_mask: Optional[torch.Tensor] = None,
            is_causal: bool = False,
    ) -> torch.Tensor:
        self.set_grid(self.grid_for(x))
        # timm's dynamic_img_size path: patch_embed -> (B, gh, gw, D), resample_abs_pos_embed, blocks, norm.
        return super().forward_features(x, attn_mask=attn_mask, is_causal=is_causal)

    def last_block_cls_only(self) -> bool:
        """Whether ``forward`` computes the last block for the class token alone: class-token pooling,
        one prefix token that skips the locality MLP, timm's plain attention (no gate)."""
        blk = self.blocks[-1]
        return (self.cls_only_last and self.locality and self.global_pool == 'token'
                and self.num_prefix_tokens == 1 and not self.no_embed_class and type(blk) is Block
                and isinstance(blk.mlp, LocalityMlp) and blk.mlp.cls_path == 'skip' and type(blk.attn) is Attention
                and getattr(blk.attn, 'gate', None) is None and not self.grad_checkpointing)

    def forward(
            self,
            x: torch.Tensor,
            attn_mask: Optional[torch.Tensor] = None,
            is_causal: bool = False,
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal or not self.last_block_cls_only():
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        self.set_grid(self.grid_for(x))
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))  # (B, 1 + gh*gw, D)
        for i in range(len(self.blocks) - 1):
            x = self.blocks[i](x)
        x = _class_token_block(self.blocks[-1], x)  # (B, 1, D)
        return self.forward_head(self.norm(x))

    def forward_intermediates(self, x: torch.Tensor, *args, **kwargs):
        self.set_grid(self.grid_for(x))
        return super().forward_intermediates(x, *args, **kwargs)


def _class_token_block(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's Block(x)[:, :1] when its MLP gives the class token zero (LocalityMlp, cls_path="skip"):
    the class token's query against every token's keys and values, then the projection. Identical
    without dropout; attention or projection dropout draws masks of the same distribution but
    another shape, and the skipped MLP's drop path draws nothing (later draws shift).

    Args:
        blk: a timm Block with timm's Attention.
        x: (B, 1 + N, D) tokens, the class token first.
    """
    attn = blk.attn
    B, T, D = x.shape
    h = blk.norm1(x)
    w, b = attn.qkv.weight, attn.qkv.bias  # rows: q, k, v
    dim = w.shape[0] // 3
    q = F.linear(h[:, :1], w[:dim], None if b is None else b[:dim])  # (B, 1, dim)
    kv = F.linear(h, w[dim:], None if b is None else b[dim:])  # (B, T, 2 dim)
    q = q.reshape(B, 1, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, heads, 1, hd)
    k, v = kv.reshape(B, T, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, T, hd)
    q, k = attn.q_norm(q), attn.k_norm(k)
    o = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.)
    o = o.transpose(1, 2).reshape(B, 1, dim)  # (B, 1, dim)
    if hasattr(attn, 'norm'):  # timm's scale_norm (Identity by default); older timm has no such layer
        o = attn.norm(o)
    o = attn.proj_drop(attn.proj(o))
    return x[:, :1] + blk.drop_path1(blk.ls1(o))  # + drop_path2(ls2(0)) = + 0: the MLP gives it nothing


def _resample_loaded_pos_embed(module: LocalityViT, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: a checkpoint from a model built at another img_size has a position
    embedding on another grid; resample it to this model's grid (checkpoint grid assumed square)."""
    key = prefix + 'pos_embed'
    if module.pos_embed is None or key not in state_dict or state_dict[key].shape == module.pos_embed.shape:
        return
    pe = state_dict[key]
    n_prefix = 0 if module.no_embed_class else module.num_prefix_tokens
    side = math.isqrt(pe.shape[1] - n_prefix)
    if pe.ndim != 3 or pe.shape[-1] != module.pos_embed.shape[-1] or side * side != pe.shape[1] - n_prefix:
        raise ValueError(f"cannot resample checkpoint pos_embed {tuple(pe.shape)} to {tuple(module.pos_embed.shape)}: "
                         f"expected (1, {n_prefix} + side^2, {module.pos_embed.shape[-1]})")
    state_dict[key] = resample_abs_pos_embed(
        pe, new_size=module.patch_embed.grid_size, old_size=(side, side), num_prefix_tokens=n_prefix)
