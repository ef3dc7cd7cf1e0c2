"""Contracts of model/: variants, any-size forward/backward, locality, timm parity, FLOPs, errors.

Runs on CPU in well under a minute; sizes sweeps use a tiny patch-16 model (dim 32, depth 2) so the
grids are the real curriculum grids (2x2 ... 14x14) at little cost.
"""
import os

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

import model
from model.locality import LocalityMlp

CURRICULUM = (32, 64, 96, 128, 160, 192, 224)
TINY = dict(embed_dim=32, depth=2, num_heads=2, num_classes=7)

# FlopCounterMode has no formula for the CPU flash-attention kernel; count it like the CUDA ones.
CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)}


def tiny(local: bool = True, **kwargs) -> model.LocalityViT:
    torch.manual_seed(0)
    name = 'vitday_tiny_patch16_local' if local else 'vitday_tiny_patch16'
    return timm.create_model(name, **dict(TINY, **kwargs))


def images(size, batch: int = 2, channels: int = 3, seed: int = 0) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- variants and parameter counts

def test_all_variants_registered_and_build():
    assert set(model.VARIANTS) <= set(timm.list_models('vitday_*'))
    assert len(model.VARIANTS) == 10
    for name in ('vitday_pico_patch4', 'vitday_pico_patch4_local', 'vitday_nano_patch4_local'):
        net = timm.create_model(name, num_classes=10)
        assert net(images(28)).shape == (2, 10)  # Fashion-MNIST size, 7x7 grid
        assert net.locality == name.endswith('_local')


def test_kwargs_pass_through():
    net = timm.create_model('vitday_tiny_patch16_local', num_classes=13, img_size=96, drop_path_rate=0.2)
    assert net.head.out_features == 13
    assert net.patch_embed.grid_size == (6, 6) and net.pos_embed.shape == (1, 1 + 36, 192)
    assert net.blocks[-1].drop_path2.drop_prob == pytest.approx(0.2)
    assert isinstance(net.blocks[0].drop_path2, nn.Identity)  # timm's linear rule: 0 at the first block
    net.train()
    assert torch.isfinite(net(images(64))).all()


def test_small_param_counts_match_timm_and_paper():
    ref = timm.create_model('vit_small_patch16_224')
    plain = timm.create_model('vitday_small_patch16')
    local = timm.create_model('vitday_small_patch16_local', device='meta')  # counting needs no memory
    n_ref = model.count_params(ref)
    assert n_ref == 22_050_664
    assert model.count_params(plain) == n_ref
    # Locality per block: + depthwise 3x3 on 1536 channels, - the two MLP biases (paper: no bias).
    assert model.count_params(local) - n_ref == 12 * (1536 * 9 - 1536 - 384) == 142_848
    # The paper's attention has no qkv bias either; with it off as well the difference is the paper's ~0.13 M.
    paper = timm.create_model('vitday_small_patch16_local', qkv_bias=False, device='meta')
    assert model.count_params(paper) - n_ref == 129_024
    # Layout-equivalent: timm's checkpoint loads strictly and gives the same logits.
    plain.load_state_dict(ref.state_dict(), strict=True)
    x = images(224, batch=1)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), ref.eval()(x), rtol=0, atol=1e-6)


def test_xavier_init_is_the_authors():
    """weight_init='xavier': xavier_normal_ std sqrt(2 / (fan_in + fan_out)) on every Linear weight (the head
    too), PyTorch's default uniform(+-1/sqrt(fan_in)) biases, xavier on the class token and position embedding
    (fan-in of a (1, N, D) tensor: N * D); the default init stays timm's."""
    torch.manual_seed(0)
    net = timm.create_model('vitday_small_patch16_local', weight_init='xavier')
    timm_net = timm.create_model('vitday_small_patch16_local')
    for name, (fan_in, fan_out) in {'blocks.5.mlp.fc1': (384, 1536), 'blocks.11.mlp.fc2': (1536, 384),
                                    'blocks.0.attn.proj': (384, 384), 'head': (384, 1000)}.items():
        w = net.get_submodule(name).weight
        assert w.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.03), name
        assert timm_net.get_submodule(name).weight.std().item() == pytest.approx(0.02, rel=0.03), name
    for w in net.blocks[0].attn.qkv.weight.chunk(3):  # the authors' q, k, v: three Linear(384, 384)
        assert w.std().item() == pytest.approx((2 / (384 + 384)) ** 0.5, rel=0.03)
    bias = net.blocks[3].attn.proj.bias
    assert bias.abs().max().item() <= 384 ** -0.5 and bias.std().item() == pytest.approx((3 * 384) ** -0.5, rel=0.15)
    assert (timm_net.blocks[3].attn.proj.bias == 0).all()
    assert net.pos_embed.std().item() == pytest.approx((2 / (197 * 384 + 384)) ** 0.5, rel=0.03)
    assert net.cls_token.std().item() == pytest.approx((2 / (384 + 384)) ** 0.5, rel=0.15)
    assert timm_net.cls_token.abs().max().item() < 1e-4
    conv = net.blocks[0].mlp.conv.weight  # PyTorch's default, channels-last kept
    assert conv.abs().max().item() <= 9 ** -0.5 and conv.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(net(images(64, batch=2))).all()


# ---------------------------------------------------------------- the locality layer

def test_locality_mlp_structure_and_activation():
    net = tiny()
    mlp = net.blocks[0].mlp
    assert isinstance(mlp, LocalityMlp)
    assert isinstance(mlp.act1, nn.Hardswish) and isinstance(mlp.act2, nn.Hardswish)
    assert mlp.fc1.bias is None and mlp.fc2.bias is None and mlp.conv.bias is None
    assert mlp.conv.groups == mlp.conv.in_channels == 4 * 32 and mlp.conv.kernel_size == (3, 3)
    gelu = tiny(act_layer='gelu')
    assert type(gelu.blocks[0].mlp.act1).__name__ == 'GELU'
    assert type(tiny(local=False).blocks[0].mlp.act).__name__ == 'GELU'
    assert tiny().blocks[0].mlp.cls_path == 'skip'  # paper default


def paper_locality(mlp: LocalityMlp, x: torch.Tensor, grid) -> torch.Tensor:
    """The MLP branch as the paper's code writes it: split cls, NCHW grid, conv, back to tokens."""
    B, T, D = x.shape
    cls, patches = torch.split(x, [1, T - 1], dim=1)
    h = mlp.act1(mlp.fc1(patches)).transpose(1, 2).reshape(B, -1, *grid)
    h = mlp.act2(mlp.conv(h)).flatten(2).transpose(1, 2)
    return torch.cat([torch.zeros_like(cls), mlp.fc2(h)], dim=1)


def test_locality_mlp_matches_paper_formula_and_skips_cls():
    mlp = LocalityMlp(16, 64)
    grid = (3, 5)  # non-square: the grid comes from the model, not from sqrt(tokens)
    mlp.grid_size = grid
    x = torch.randn(2, 1 + 15, 16)
    y = mlp(x)
    assert y.shape == x.shape
    assert torch.equal(y[:, 0], torch.zeros_like(y[:, 0]))  # cls row contributes 0 to its residual
    assert torch.allclose(y, paper_locality(mlp, x, grid), atol=1e-6)


def test_pointwise_cls_path_is_the_conv_of_a_lone_token():
    skip, point = LocalityMlp(16, 64), LocalityMlp(16, 64, cls_path='pointwise')
    point.load_state_dict(skip.state_dict())  # same parameters, only the cls row differs
    skip.grid_size = point.grid_size = (2, 3)
    x = torch.randn(2, 1 + 6, 16)
    ys, yp = skip(x), point(x)
    assert torch.allclose(yp[:, 1:], ys[:, 1:], atol=1e-6)
    lone = point.act1(point.fc1(x[:, :1])).transpose(1, 2).reshape(2, 64, 1, 1)  # 1x1 grid, zero padding
    expected = point.fc2(point.act2(point.conv(lone)).flatten(1))
    assert torch.allclose(yp[:, 0], expected, atol=1e-6) and yp[:, 0].abs().sum() > 0
    with pytest.raises(ValueError, match="cls_path must be"):
        LocalityMlp(16, 64, cls_path='center')


def test_locality_mlp_is_local():
    """A patch token's MLP output depends on its 3x3 neighbourhood only (and never on the cls token)."""
    mlp = LocalityMlp(8, 32)
    mlp.grid_size = (5, 6)
    x = torch.randn(1, 1 + 30, 8)
    base = mlp(x)
    x2 = x.clone()
    r, c = 2, 3
    x2[0, 1 + r * 6 + c] += 1.0
    x2[0, 0] += 1.0  # cls token
    changed = (mlp(x2) - base).abs().sum(-1)[0, 1:].reshape(5, 6) > 0
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[r - 1:r + 2, c - 1:c + 2] = True
    assert torch.equal(changed, expected)


def test_locality_mlp_needs_grid():
    mlp = LocalityMlp(8, 32)
    with pytest.raises(RuntimeError, match='grid_size'):
        mlp(torch.randn(1, 5, 8))
    mlp.grid_size = (2, 2)
    with pytest.raises(ValueError, match='expected 1 prefix'):
        mlp(torch.randn(1, 6, 8))


# ---------------------------------------------------------------- any size, fp32 and bf16, gradients

def dead_with_token_pooling(net) -> set:
    """Parameters that cannot get gradient when the cls token skips the MLP: the last block's MLP only
    changes patch tokens, and the head reads the cls token alone (true of the paper's model too)."""
    last = len(net.blocks) - 1
    return {n for n, _ in net.named_parameters() if n.startswith((f'blocks.{last}.mlp.', f'blocks.{last}.norm2.'))}


@pytest.mark.parametrize('size', CURRICULUM)
def test_forward_backward_every_curriculum_size(size):
    x = images(size)
    for cls_path, cls_only_last in (('skip', True), ('skip', False), ('pointwise', True)):
        net = tiny(cls_path=cls_path, cls_only_last=cls_only_last)
        assert net.last_block_cls_only() == (cls_path == 'skip' and cls_only_last)
        out = net(x)
        assert out.shape == (2, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()
        out.square().mean().backward()
        dead = dead_with_token_pooling(net) if cls_path == 'skip' else set()
        assert len(dead) == (5 if cls_path == 'skip' else 0)  # norm2.{weight,bias}, fc1, conv, fc2
        for name, p in net.named_parameters():
            if name in dead and cls_only_last:  # never computed: no gradient at all
                assert p.grad is None, f'{name} computed, though the last block runs for the class token only'
                continue
            assert p.grad is not None, f'{name} got no gradient at {size} px'
            assert torch.isfinite(p.grad).all()
            # DDP's buckets need each gradient laid out as its parameter (else a warning and a copy per step)
            assert p.grad.stride() == p.stride(), f'{name}: grad strides {p.grad.stride()} vs {p.stride()}'
            if name in dead:
                assert p.grad.abs().sum() == 0, f'{name} should be unreachable with cls skip'
            else:
                assert p.grad.abs().sum() > 0, f'{name} gradient zero at {size} px ({cls_path})'
        # Every stored position (the trained 14x14 grid and cls) gets gradient, even through the 2x2 resample.
        assert (net.pos_embed.grad[0].abs().sum(-1) > 0).all()
        assert all(blk.mlp.conv.weight.grad.abs().sum() > 0 for blk in net.blocks[:-1])

        net.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out16 = net(x)
        assert out16.shape == (2, 7) and out16.dtype == torch.bfloat16 and torch.isfinite(out16).all()
        out16.float().square().mean().backward()
        live = [p for n, p in net.named_parameters() if not (n in dead and cls_only_last)]
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in live)
        assert all(p.grad.stride() == p.stride() for p in live)
        assert torch.allclose(out16.float(), out, atol=0.1, rtol=0.1)  # bf16 tracks fp32


def test_every_parameter_trained_with_avg_pool_even_when_cls_skips():
    net = tiny(global_pool='avg')
    net(images(64)).square().mean().backward()
    assert all(p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize('size', [(32, 96), (80, 48)])
def test_non_square_inputs(size):
    for local in (True, False):
        net = tiny(local)
        out = net(images(size))
        assert out.shape == (2, 7) and torch.isfinite(out).all()
        if local:
            assert net.blocks[0].mlp.grid_size == (size[0] // 16, size[1] // 16)


# ---------------------------------------------------------------- position embedding

def test_resample_same_size_is_identity():
    """Through the forward's own path (timm's _pos_embed on a (B, rows, cols, D) grid of zeros, so
    the output is cls token + the position embedding it used)."""
    net = tiny().eval()
    gh, gw = net.patch_embed.grid_size
    same = net._pos_embed(torch.zeros(1, gh, gw, 32))
    assert torch.equal(same[:, 1:], net.pos_embed[:, 1:])  # the parameter itself: no interpolation
    up = net._pos_embed(torch.zeros(1, 8, 8, 32))
    want = resample_abs_pos_embed(net.pos_embed, new_size=(8, 8), old_size=(gh, gw), num_prefix_tokens=1)
    assert up.shape == (1, 65, 32) and torch.equal(up[:, 1:], want[:, 1:])
    assert torch.equal(up[:, 0], (net.cls_token + net.pos_embed[:, :1])[:, 0])  # cls entry not resampled


def test_state_dict_from_32px_model_runs_at_224():
    small = tiny(img_size=32)
    assert small.pos_embed.shape == (1, 5, 32)
    big = tiny(img_size=224)
    missing = big.load_state_dict(small.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    expected = resample_abs_pos_embed(small.pos_embed.detach(), (14, 14), old_size=(2, 2))
    assert torch.allclose(big.pos_embed, expected)
    for size in (224, 32):
        out = big(images(size))
        assert out.shape == (2, 7) and torch.isfinite(out).all()
    # Curriculum case: a model built at 224, trained at 32, restored into a fresh 224 model: same numbers.
    fresh = tiny(img_size=224, )
    fresh.load_state_dict(big.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(images(32)), big(images(32)))


# ---------------------------------------------------------------- timm parity with locality off

@pytest.mark.parametrize('size', [224, 96])
def test_locality_off_equals_timm_reference(size):
    ours = tiny(local=False).eval()
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=16, dynamic_img_size=size != 224, **TINY).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = images(size)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff <= 1e-6, diff


# ---------------------------------------------------------------- errors

def test_bad_inputs_raise_clear_errors():
    net = tiny()
    with pytest.raises(ValueError, match=r'not a multiple of the patch size 16x16'):
        net(images(40))
    with pytest.raises(ValueError, match=r'not a multiple of the patch size'):
        net(images((32, 50)))
    with pytest.raises(ValueError, match=r'expected 3 input channels, got 1'):
        net(images(32, channels=1))
    with pytest.raises(ValueError, match=r'batch of images'):
        net(torch.randn(3, 32, 32))
    with pytest.raises(RuntimeError, match='Unknown model'):
        timm.create_model('vitday_huge_patch16_local')
    with pytest.raises(ValueError, match=r"unknown vitday variant 'vitday_huge'.*vitday_small_patch16_local"):
        model.create('vitday_huge')
    with pytest.raises(ValueError, match='no pretrained weights'):
        timm.create_model('vitday_pico_patch4', pretrained=True)
    with pytest.raises(ValueError, match='multiple of the patch size'):
        model.forward_flops(net, 100)
    assert model.create('vitday_pico_patch4_local', num_classes=3)(images(32)).shape == (2, 3)


# ---------------------------------------------------------------- FLOPs

@pytest.mark.parametrize('kind', ['plain', 'skip', 'pointwise'])
@pytest.mark.parametrize('size', [32, 96, 224, (64, 160)])
def test_forward_flops_match_flop_counter(kind, size):
    """Exact match (tolerance 0): both count matmul, conv and SDPA FLOPs, multiply-add = 2."""
    net = (tiny(local=False) if kind == 'plain' else tiny(cls_path=kind)).eval()
    counter = FlopCounterMode(display=False, custom_mapping=CPU_SDPA)
    with counter, torch.no_grad():
        net(images(size, batch=1))
    assert counter.get_total_flops() == model.forward_flops(net, size)


def test_small_flops_at_224():
    plain = timm.create_model('vitday_small_patch16', device='meta')  # shapes only: FLOPs need no numbers
    paper = timm.create_model('vitday_small_patch16_local', device='meta', cls_only_last=False)
    local = timm.create_model('vitday_small_patch16_local', device='meta')
    assert model.forward_flops(plain, 224) == 9_197_764_608  # DESIGN: ~27.6 GFLOP per training image
    assert model.train_flops(plain, 224) == 3 * 9_197_764_608
    # The paper: locality costs about +0.4 % MACs at 224 px.
    assert model.forward_flops(paper, 224) / model.forward_flops(plain, 224) == pytest.approx(1.004, abs=5e-4)
    # The last block for the class token alone: ~7 % fewer at every size (1 of 12 blocks, most of it)
    for size in (64, 224):
        saved = 1 - model.forward_flops(local, size) / model.forward_flops(paper, size)
        assert 0.06 < saved < 1 / 12, (size, saved)
    for net in (plain, paper, local):
        for size in (224, 64):
            counter = FlopCounterMode(display=False)  # attention on meta tensors is counted as bmm
            with counter, torch.no_grad():
                net.eval()(torch.empty(1, 3, size, size, device='meta'))
            assert counter.get_total_flops() == model.forward_flops(net, size)


# ---------------------------------------------------------------- optimizer groups

def test_class_token_last_block_gives_the_full_models_logits_and_gradients():
    """cls_only_last computes the last block for the class token alone: the same logits and the same
    gradient for every parameter that gets one (the last MLP gets none: in the full model its gradient
    is exactly zero), in training (no drop path) and evaluation, at every size and a non-square one."""
    full = tiny(cls_only_last=False)
    short = tiny()
    short.load_state_dict(full.state_dict())
    for size in (*CURRICULUM[:3], 224, (48, 80)):
        x = images(size, batch=3)
        for train in (True, False):
            full.train(train), short.train(train)
            a, b = short(x), full(x)
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (size, train)
            full.zero_grad(set_to_none=True), short.zero_grad(set_to_none=True)
            a.square().sum().backward(), b.square().sum().backward()
            for (n, p), q in zip(short.named_parameters(), full.parameters()):
                if p.grad is None:
                    assert n in dead_with_token_pooling(short) and q.grad.abs().sum() == 0, n
                else:
                    assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), (n, size)
    # forward_features, and avg pooling, still see every token: the full path
    assert short.forward_features(images(32)).shape == (2, 5, 32)
    assert not tiny(global_pool='avg').last_block_cls_only()
    from timm.models.vision_transformer import ResPostBlock
    post = tiny(block_fn=ResPostBlock)  # post-norm: the class-token block assumes pre-norm, so it falls back
    assert not post.last_block_cls_only() and post(images(32)).shape == (2, 7)


def test_param_groups():
    net = tiny(local=False)
    decay, no_decay = model.param_groups(net, weight_decay=0.05)
    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0.0
    names = dict(net.named_parameters())
    assert set(decay['names']) | set(no_decay['names']) == set(names)
    assert not set(decay['names']) & set(no_decay['names'])
    assert {'pos_embed', 'cls_token', 'norm.weight', 'norm.bias', 'head.bias', 'blocks.0.attn.qkv.bias'} \
        <= set(no_decay['names'])
    assert all(names[n].ndim >= 2 for n in decay['names'])
    assert {'patch_embed.proj.weight', 'head.weight', 'blocks.1.mlp.fc2.weight'} <= set(decay['names'])
    local = tiny()
    assert 'blocks.0.mlp.conv.weight' in model.param_groups(local, 0.05)[0]['names']
    opt = torch.optim.AdamW(model.param_groups(local, 0.05), lr=1e-3)
    local(images(32)).sum().backward()
    before = local.pos_embed.detach().clone()
    opt.step()
    assert not torch.equal(before, local.pos_embed)  # the one position embedding is trained


# ---------------------------------------------------------------- torch.compile

def test_compile_fullgraph_forward_backward_across_sizes():
    """fullgraph=True with AOT autograd traces forward and backward in one graph each; a graph break
    raises. (Inductor itself is exercised by bench/model.py and the VITDAY_SLOW test.)"""
    torch._dynamo.reset()
    net = tiny()
    compiled = torch.compile(net, backend='aot_eager', fullgraph=True)
    for size in (32, (48, 80)):
        x = images(size)
        net.zero_grad()
        out = compiled(x)
        out.sum().backward()
        assert all(p.grad.stride() == p.stride() for p in net.parameters() if p.grad is not None)  # as eager
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        net.zero_grad()
        ref = net(x)
        ref.sum().backward()
        assert torch.allclose(out, ref, atol=1e-5)
        assert set(grads) == {n for n, p in net.named_parameters() if p.grad is not None}
        for n, g in grads.items():
            assert torch.allclose(g, net.get_parameter(n).grad, atol=1e-5), n


def bf16_eager_and_compiled_agree(device: torch.device, sizes=(32, 64, 224), compiled_size=64) -> None:
    """The trainer's step on `device`: bf16 autocast, eager at every size and inductor at one; every
    gradient finite and laid out as its parameter (what DDP's buckets need; on CUDA the depthwise
    conv's gradient comes from cuDNN), compiled outputs and gradients close to eager."""
    torch._dynamo.reset()
    net = tiny().to(device)
    compiled = torch.compile(net, fullgraph=True, dynamic=False)
    for size in sizes:
        x = images(size, batch=8).to(device)
        runs = {}
        for name, f in (('eager', net), ('compiled', compiled)):
            if name == 'compiled' and size != compiled_size:
                continue
            net.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = f(x)
            out.float().square().mean().backward()
            live = [(n, p) for n, p in net.named_parameters() if n not in dead_with_token_pooling(net)]
            for n, p in live:
                assert torch.isfinite(p.grad).all(), f'{name} {n} at {size} px: non-finite gradient'
                assert p.grad.stride() == p.stride(), \
                    f'{name} {n} at {size} px: grad strides {p.grad.stride()} vs parameter {p.stride()}'
            runs[name] = (out.float(), [p.grad.float().clone() for _, p in live])
        if 'compiled' in runs:
            (oe, ge), (oc, gc) = runs['eager'], runs['compiled']
            assert torch.allclose(oc, oe, atol=0.05, rtol=0.05)
            for a, b in zip(gc, ge):  # bf16 rounding differs between fused and eager kernels
                assert (a - b).norm() <= 0.05 * b.norm() + 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_bf16_step_gradients_and_compile():
    bf16_eager_and_compiled_agree(torch.device('cuda'))


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get('VITDAY_SLOW') != '1',
                    reason='inductor compiles for ~1 min per size on 2 CPU cores; set VITDAY_SLOW=1')
def test_inductor_fullgraph():
    torch._dynamo.reset()
    net = timm.create_model('vitday_pico_patch4_local', num_classes=10)
    compiled = torch.compile(net, fullgraph=True, dynamic=False)
    x = images(32)
    assert torch.allclose(compiled(x), net(x), atol=1e-4)
