"""vitday variants, registered with timm: ``timm.create_model("vitday_small_patch16_local")`` after ``import model``.

Widths follow DeiT (tiny 192/3 heads, small 384/6, base 768/12; depth 12, patch 16, img_size 224). The
patch-4 variants are for 28-32 px demo data (Fashion-MNIST): pico for tests, nano for the CPU demo.
``_local`` variants use the locality MLP with h_swish; override with ``act_layer="gelu"``. Every timm
VisionTransformer kwarg passes through (num_classes, img_size, drop_path_rate, qkv_bias, ...).
"""
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .vit import LocalityViT

_ARCHS = {  # name: (patch, embed_dim, depth, heads, default img_size)
    'vitday_pico_patch4': (4, 64, 3, 2, 32),
    'vitday_nano_patch4': (4, 128, 6, 4, 32),
    'vitday_tiny_patch16': (16, 192, 12, 3, 224),
    'vitday_small_patch16': (16, 384, 12, 6, 224),
    'vitday_base_patch16': (16, 768, 12, 12, 224),
}
VARIANTS = tuple(name + suffix for name in _ARCHS for suffix in ('', '_local'))


def _cfg(name: str) -> dict:
    size = _ARCHS[name.removesuffix('_local')][4]
    return dict(url='', num_classes=1000, input_size=(3, size, size), fixed_input_size=False,
                interpolation='bicubic', crop_pct=0.875, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                first_conv='patch_embed.proj', classifier='head')


default_cfgs = generate_default_cfgs({name: _cfg(name) for name in VARIANTS})


def _create(variant: str, pretrained: bool, **kwargs) -> LocalityViT:
    if pretrained:
        raise ValueError(f"{variant} has no pretrained weights: vitday trains from scratch")
    patch, dim, depth, heads, size = _ARCHS[variant.removesuffix('_local')]
    args = dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, img_size=size,
                locality=variant.endswith('_local'))
    return build_model_with_cfg(LocalityViT, variant, pretrained, **dict(args, **kwargs))


@register_model
def vitday_pico_patch4(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_pico_patch4', pretrained, **kwargs)


@register_model
def vitday_pico_patch4_local(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_pico_patch4_local', pretrained, **kwargs)


@register_model
def vitday_nano_patch4(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_nano_patch4', pretrained, **kwargs)


@register_model
def vitday_nano_patch4_local(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_nano_patch4_local', pretrained, **kwargs)


@register_model
def vitday_tiny_patch16(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_tiny_patch16', pretrained, **kwargs)


@register_model
def vitday_tiny_patch16_local(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_tiny_patch16_local', pretrained, **kwargs)


@register_model
def vitday_small_patch16(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_small_patch16', pretrained, **kwargs)


@register_model
def vitday_small_patch16_local(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_small_patch16_local', pretrained, **kwargs)


@register_model
def vitday_base_patch16(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_base_patch16', pretrained, **kwargs)


@register_model
def vitday_base_patch16_local(pretrained: bool = False, **kwargs) -> LocalityViT:
    return _create('vitday_base_patch16_local', pretrained, **kwargs)
