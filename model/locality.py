"""The locality MLP: a ViT feed-forward layer with a depthwise 3x3 convolution on the token grid.

From "Training a ViT from scratch in less than 24 hours with 1 GPU" (Irandoust et al. 2022), which takes
it from LocalViT (Li et al. 2021, https://arxiv.org/abs/2104.05707). As the authors' code does it
(github.com/BorealisAI/efficient-vit-training, models_vit/localvit.py, run with ``--localvit-act hs``):

    patch tokens -> Linear(dim -> 4 dim, no bias) -> h_swish -> reshape to the (H, W) grid
                 -> depthwise 3x3 conv (groups = 4 dim, no bias) -> h_swish -> Linear(4 dim -> dim, no bias)

The class token skips the MLP: that code splits it off before the feed-forward branch and concatenates it
back unchanged. Here the layer is timm's ``mlp_layer=``, so timm's Block still adds ``mlp(norm2(x))`` to
every token; with ``cls_path="skip"`` (default, the paper) the rows of the prefix (class) tokens are zero, so
their residual stream passes unchanged, exactly the paper's behaviour (DropPath / LayerScale of zero stay 0).

Consequence (true of the paper's model too): with class-token pooling the last block's MLP only changes
patch tokens that nothing reads, so its norm2/fc1/conv/fc2 get no gradient; LocalityViT therefore runs
the last block for the class token alone (``cls_only_last``, model/vit.py) instead of wasting ~1/12 of
the MLP FLOPs. ``cls_path="pointwise"`` (ours, not the paper's) sends prefix tokens through the same layer as
isolated pixels: fc1 -> act -> the conv's centre tap (what a zero-padded 3x3 depthwise conv does to a lone
token) -> act -> fc2. Same parameters, every one trained, +2 * prefix * dim * 4 dim FLOPs per block.

The token grid (H, W) cannot be recovered from the token count for non-square inputs, and recovering it
with ``sqrt`` breaks torch.compile's shape tracing; the owning model sets ``grid_size`` from the static
input shape at the start of every forward (see model/vit.py).
"""
from typing import Literal, Optional, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F


class LocalityMlp(nn.Module):
    """Locality feed-forward layer for timm's ``Block(mlp_layer=...)``.

    Args:
        in_features: token width (dim).
        hidden_features: hidden width (timm's Block passes ``int(dim * mlp_ratio)``, 4 dim by default).
        out_features: output width; defaults to ``in_features``.
        act_layer: activation class, used after fc1 and after the conv. The paper uses h_swish
            (``nn.Hardswish``, identical to its ``x * relu6(x + 3) / 6``); ``nn.GELU`` is the other choice.
        norm_layer: unsupported (timm passes it only with ``scale_mlp_norm=True``); must be None.
        bias: what timm's Block passes for its projection layers (``proj_bias``). Ignored on purpose: the
            paper's code has no bias on fc1, fc2 and the conv; use ``linear_bias`` / ``conv_bias`` to change it.
        drop: dropout after fc2 (timm's ``proj_drop_rate``; 0 in the paper).
        num_prefix_tokens: leading tokens (class / register) that bypass the layer.
        kernel_size: depthwise kernel (3 in the paper).
        linear_bias: bias on fc1 and fc2 (paper: False).
        conv_bias: bias on the depthwise conv (paper: False).
        cls_path: what prefix tokens get: "skip" (zero, the paper) or "pointwise" (see module docstring).
    """

    def __init__(
            self,
            in_features: int,
            hidden_features: Optional[int] = None,
            out_features: Optional[int] = None,
            act_layer: Type[nn.Module] = nn.Hardswish,
            norm_layer: Optional[Type[nn.Module]] = None,
            bias: bool = False,
            drop: float = 0.,
            num_prefix_tokens: int = 1,
            kernel_size: int = 3,
            linear_bias: bool = False,
            conv_bias: bool = False,
            cls_path: Literal['skip', 'pointwise'] = 'skip',
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        if norm_layer is not None:
            raise ValueError("LocalityMlp has no inner norm (timm's scale_mlp_norm); build the model without it")
        if cls_path not in ('skip', 'pointwise'):
            raise ValueError(f"cls_path must be 'skip' (paper) or 'pointwise', got {cls_path!r}")
        dd = {'device': device, 'dtype': dtype}
        hidden_features = hidden_features or 4 * in_features
        out_features = out_features or in_features
        self.num_prefix_tokens = num_prefix_tokens
        self.cls_path = cls_path
        # Set by the owning model from the input shape before each forward: (rows, cols) of patch tokens.
        self.grid_size: Optional[Tuple[int, int]] = None

        self.fc1 = nn.Linear(in_features, hidden_features, bias=linear_bias, **dd)
        self.act1 = act_layer()
        self.conv = nn.Conv2d(
            hidden_features, hidden_features, kernel_size, padding=kernel_size // 2,
            groups=hidden_features, bias=conv_bias, **dd)
        # DDP's gradient buckets want each gradient laid out as its parameter (else it warns "Grad strides
        # do not match bucket view strides" and copies them every step). The conv reads channels-last
        # activations, so its weight gradient comes back with strides (9, 1, 3, 1); the 'pointwise' path
        # adds the centre tap's gradient, and that sum comes back (9, 9, 3, 1). Both are the same memory
        # (dim 1 has size 1): the weight takes the strides its gradient will have.
        if cls_path == 'skip':
            self.conv.weight.data = self.conv.weight.data.to(memory_format=torch.channels_last)
        self.act2 = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=linear_bias, **dd)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid_size is None:
            raise RuntimeError("LocalityMlp.grid_size is unset: the owning model must set it from the input "
                               "shape before the blocks run (model.vit.LocalityViT does)")
        gh, gw = self.grid_size
        B, T, _ = x.shape  # (B, prefix + gh*gw, dim)
        if T != self.num_prefix_tokens + gh * gw:
            raise ValueError(f"LocalityMlp got {T} tokens, expected {self.num_prefix_tokens} prefix + "
                             f"{gh}x{gw} grid = {self.num_prefix_tokens + gh * gw}")
        n = self.num_prefix_tokens
        if self.cls_path == 'skip':
            x = x[:, n:]  # (B, gh*gw, dim): prefix tokens skip the layer
        x = self.act1(self.fc1(x))  # (B, [n +] gh*gw, hidden)
        if self.cls_path == 'pointwise':
            prefix, x = x[:, :n], x[:, n:]
        # NHWC memory viewed as NCHW: a channels-last tensor, no copy; conv output stays channels-last.
        x = x.reshape(B, gh, gw, -1).permute(0, 3, 1, 2)  # (B, hidden, gh, gw)
        x = self.act2(self.conv(x))
        x = x.permute(0, 2, 3, 1).reshape(B, gh * gw, -1)  # (B, gh*gw, hidden)
        if self.cls_path == 'pointwise':
            k = self.conv.kernel_size
            prefix = prefix * self.conv.weight[:, 0, k[0] // 2, k[1] // 2]  # centre tap: a lone token's conv
            if self.conv.bias is not None:
                prefix = prefix + self.conv.bias
            x = torch.cat([self.act2(prefix), x], dim=1)  # (B, n + gh*gw, hidden)
            return self.drop(self.fc2(x))  # (B, n + gh*gw, dim)
        x = self.drop(self.fc2(x))  # (B, gh*gw, dim)
        # Prefix tokens get zero from the MLP branch, so their residual passes unchanged (paper's cls bypass).
        return F.pad(x, (0, 0, n, 0))  # (B, n + gh*gw, dim)
