import inspect
import json
import math

import pytest
import torch
import torch.nn.functional as F

from difforge.errors import ConfigError
from difforge.models import build, count_parameters, forward_gflops, registry
from difforge.models.adm import ADM, AttentionBlock, default_channel_mult
from tests.models.netkit import inputs, perturb


TINY = dict(num_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], num_head_channels=8)


def make(**kw):
    torch.manual_seed(0)
    return perturb(ADM(**{**TINY, **kw}))


@pytest.mark.parametrize("updown,new_order,scale_shift", [(True, True, True), (True, False, False), (False, True, False)])
def test_variants_run_and_resample_in_resblocks(updown, new_order, scale_shift):
    net = make(image_size=16, resblock_updown=updown, use_new_attention_order=new_order,
               use_scale_shift_norm=scale_shift, num_classes=3, dropout=0.1)
    x, t, y = inputs(net)
    net.eval()
    with torch.no_grad():
        assert net(x, t, y).shape == (2, 3, 16, 16)
    keys = net.state_dict().keys()
    assert ("input_blocks.2.0.in_layers.2.weight" in keys) == updown  # down: a ResBlock, else Downsample.op
    assert ("input_blocks.2.0.op.weight" in keys) == (not updown)
    emb_rows = net.input_blocks[1][0].emb_layers[1].out_features
    assert emb_rows == (32 if scale_shift else 16)


def test_128px_tiniest_and_non_square():
    net = ADM(image_size=128, num_channels=8, channel_mult=[1, 1, 2], num_res_blocks=1, attention_resolutions=[32],
              num_heads=1)
    x, t, _ = inputs(net, batch=1)
    with torch.no_grad():
        assert net(x, t).shape == (1, 3, 128, 128)
        assert net(torch.randn(1, 3, 16, 24), t).shape == (1, 3, 16, 24)


def test_contract_attributes_and_config():
    net = ADM(image_size=32, in_channels=1, num_classes=4, learn_sigma=True, **TINY)
    assert (net.in_channels, net.out_channels, net.num_classes, net.learn_sigma, net.image_size) == (1, 2, 4, True, 32)
    assert net.arch == "adm"
    assert list(net.config) == list(inspect.signature(ADM).parameters)
    assert json.loads(json.dumps(net.config)) == net.config
    assert net.label_emb.num_embeddings == 5  # + null class


def test_timestep_scale_multiplies_t():
    """timestep_scale s feeds s * t to the embedding (OpenAI's rescale_timesteps uses 1000 / T)."""
    net = make(image_size=16)
    x, _, _ = inputs(net, batch=1)
    with torch.no_grad():
        scaled = make(image_size=16, timestep_scale=0.25)
        assert torch.allclose(scaled(x, torch.tensor([40.0])), net(x, torch.tensor([10.0])), atol=1e-5)


def _reference_attention(block, x, legacy):
    """OpenAI's QKVAttentionLegacy / QKVAttention written out with einsum (independent of SDPA)."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, -1)
    qkv = F.conv1d(block.norm(flat), block.qkv.weight, block.qkv.bias)
    heads, ch = block.num_heads, c // block.num_heads
    if legacy:
        q, k, v = qkv.reshape(b * heads, 3 * ch, -1).split(ch, dim=1)
    else:
        q, k, v = (z.reshape(b * heads, ch, -1) for z in qkv.chunk(3, dim=1))
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    return (flat + F.conv1d(a, block.proj_out.weight, block.proj_out.bias)).reshape(b, c, h, w)


@pytest.mark.parametrize("legacy", [True, False])
def test_attention_matches_openai_formula(legacy):
    torch.manual_seed(0)
    block = perturb(AttentionBlock(32, num_heads=4, new_order=not legacy), scale=0.3)
    x = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        assert torch.allclose(block(x), _reference_attention(block, x, legacy), atol=1e-5)


def test_channel_mult_default_follows_openai():
    assert default_channel_mult(256) == [1, 1, 2, 2, 4, 4]
    assert default_channel_mult(64) == [1, 2, 3, 4]
    assert default_channel_mult(96) == [1, 2, 3, 4]
    assert default_channel_mult(16) == [1, 2, 2, 2]
    with torch.device("meta"):
        net = ADM(image_size=512, num_channels=32, num_res_blocks=1, attention_resolutions=[])
    assert net.config["channel_mult"] == [0.5, 1, 1, 2, 2, 4, 4]
    assert net.input_blocks[0][0].out_channels == 16  # int(0.5 * 32)


def test_released_model_sizes():
    """guided-diffusion's ImageNet 256x256 conditional model has 554M parameters (Dhariwal & Nichol 2021)."""
    with torch.device("meta"):
        net = build("adm-imagenet256")
    assert abs(count_parameters(net) / 1e6 - 554) < 1


@pytest.mark.parametrize(
    "key,value",
    [("channel_mult", [1, 0]), ("num_res_blocks", 0), ("dropout", 1.0), ("learn_sigma", "yes"),
     ("num_classes", -1), ("attention_resolutions", [8, 0]), ("num_head_channels", 0), ("timestep_scale", 0)],
)
def test_invalid_values_name_the_option(key, value):
    with pytest.raises(ConfigError, match=key):
        build("adm", image_size=16, **{**TINY, key: value})


def test_head_and_size_errors():
    with pytest.raises(ConfigError, match="num_head_channels=12 must divide the attention channels 32"):
        build("adm", image_size=16, **{**TINY, "num_head_channels": 12})
    with pytest.raises(ConfigError, match=r"adm with 2 levels needs an image size divisible by 2; 16 or 18 would work, got 17"):
        registry.check_image_size("adm", TINY, 17)
    with pytest.raises(ConfigError, match="unknown network 'adm-tiny'.*adm, adm-imagenet128"):
        build("adm-tiny")
    with pytest.raises(ConfigError, match=r"unknown option 'model_channels' for network 'adm'.*num_channels"):
        build("adm", model_channels=64)


def test_info_and_bf16_autocast():
    net = make(image_size=32)
    assert forward_gflops(net) > 0
    x, t, _ = inputs(net)
    with torch.no_grad():
        ref = net(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, t)
    assert (out.float() - ref).norm() < 0.05 * ref.norm()
