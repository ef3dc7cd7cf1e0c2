"""vitday's network: timm ViTs that run at any multiple of the patch size, with an optional locality MLP.

``import model`` registers the variants with timm; then ``timm.create_model("vitday_small_patch16_local",
num_classes=1000, img_size=224, drop_path_rate=0.1)``. See model/vit.py and model/locality.py.
"""
import timm

from . import variants
from .flops import count_params, forward_flops, train_flops
from .locality import LocalityMlp
from .optim import param_groups
from .variants import VARIANTS
from .vit import LocalityViT

__all__ = ['VARIANTS', 'LocalityMlp', 'LocalityViT', 'count_params', 'create', 'forward_flops',
           'param_groups', 'train_flops']


def create(name: str, **kwargs) -> LocalityViT:
    """``timm.create_model`` restricted to vitday variants, with a clear error for unknown names.

    Args:
        name: one of ``model.VARIANTS``.
        **kwargs: passed to the model (num_classes, img_size, drop_path_rate, act_layer, ...).
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown vitday variant {name!r}; expected one of: {', '.join(VARIANTS)}")
    return timm.create_model(name, **kwargs)
