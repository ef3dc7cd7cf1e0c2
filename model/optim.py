"""Optimizer parameter groups: weight decay on matrices and conv kernels only (as nanoGPT and timm do)."""
from typing import Dict, List

import torch.nn as nn


def param_groups(net: nn.Module, weight_decay: float) -> List[Dict]:
    """Two groups for torch.optim.AdamW: decayed weights, and everything that should not decay.

    No decay on 1-D parameters (biases, norm scales and shifts) and on the names the model lists in
    ``no_weight_decay()`` (timm ViT: pos_embed, cls_token, reg_token). Each group carries ``names``.

    Args:
        net: the model.
        weight_decay: decay of the first group.
    """
    skip = set(net.no_weight_decay()) if hasattr(net, 'no_weight_decay') else set()
    decay, no_decay = {}, {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay)[name] = p
    return [
        {'params': list(decay.values()), 'names': list(decay), 'weight_decay': weight_decay},
        {'params': list(no_decay.values()), 'names': list(no_decay), 'weight_decay': 0.0},
    ]
