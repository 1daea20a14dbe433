import inspect
import json

import numpy as np
import pytest
import torch

from difforge.errors import ConfigError
from difforge.models import build, count_parameters, forward_gflops, registry
from difforge.models.dit import PRESETS, DiT, sincos_pos_embed
from tests.models.netkit import inputs, perturb


TINY = dict(hidden_size=32, depth=2, num_heads=2, patch_size=4)


def make(**kw):
    torch.manual_seed(0)
    return perturb(DiT(**{**TINY, **kw}))


def test_128px_and_other_grids():
    net = make(image_size=128, patch_size=8, hidden_size=16, depth=1)
    x, t, _ = inputs(net, batch=1)
    with torch.no_grad():
        assert net(x, t).shape == (1, 3, 128, 128)
        assert net(torch.randn(1, 3, 32, 48), t).shape == (1, 3, 32, 48)  # positions computed on the fly
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 3, 36, 32), t)


def test_presets_registered_with_dit_sizes():
    sizes = {"s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}
    for s, (depth, dim, heads) in sizes.items():
        for p in (2, 4, 8):
            opts = registry.options(f"dit-{s}/{p}")
            assert (opts["depth"], opts["hidden_size"], opts["num_heads"], opts["patch_size"]) == (depth, dim, heads, p)
    assert len(PRESETS) == 12 and "dit" in registry.available()
    with pytest.raises(ConfigError, match=r"unknown network 'dit-s/3'.*dit-s/2, dit-s/4"):
        build("dit-s/3")


def test_parameter_counts_and_flops_match_the_paper():
    """Peebles & Xie 2023, table 1 / fig. 4: DiT-S/2 33M, B/2 130M, L/2 458M, XL/2 675M params;
    DiT-S/2 6.06 GFLOPs (multiply-adds) at 32x32x4 latents; info counts a multiply-add as 2."""
    with torch.device("meta"):
        for name, millions in [("dit-b/2", 130), ("dit-l/2", 458), ("dit-xl/2", 675)]:
            net = build(name, image_size=32, in_channels=4, num_classes=1000, learn_sigma=True)
            assert abs(count_parameters(net) / 1e6 - millions) < 1, name
    net = build("dit-s/2", image_size=32, in_channels=4, num_classes=1000, learn_sigma=True)
    assert abs(count_parameters(net) / 1e6 - 33) < 0.5
    assert abs(forward_gflops(net) / 2 - 6.06) < 0.1


def test_contract_attributes_and_config():
    net = DiT(image_size=16, in_channels=4, num_classes=4, learn_sigma=True, **TINY)
    assert (net.in_channels, net.out_channels, net.num_classes, net.learn_sigma, net.image_size) == (4, 8, 4, True, 16)
    assert net.arch == "dit"
    assert list(net.config) == list(inspect.signature(DiT).parameters)
    assert json.loads(json.dumps(net.config)) == net.config
    assert net.y_embedder.embedding_table.num_embeddings == 5


def test_pos_embed_is_a_saved_buffer_equal_to_mae_sincos():
    net = DiT(image_size=16, **TINY)
    assert "pos_embed" in net.state_dict() and "pos_embed" not in dict(net.named_parameters())
    # MAE / DiT's numpy recipe, written out independently
    dim, grid = 32, 4
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    expect = np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)
    assert torch.allclose(net.pos_embed[0], torch.from_numpy(expect).float(), atol=1e-6)
    assert torch.equal(sincos_pos_embed(dim, 4, 4), net.pos_embed[0])
    with pytest.raises(ConfigError, match="divisible by 4"):
        sincos_pos_embed(30, 2, 2)


def test_unpatchify_matches_dit_einsum():
    net = make(image_size=16, learn_sigma=True)
    x, t, _ = inputs(net)
    captured = {}
    net.final_layer.register_forward_hook(lambda m, i, o: captured.setdefault("tokens", o))
    with torch.no_grad():
        out = net(x, t)
    tok = captured["tokens"]  # (N, T, p*p*c)
    p, c, h = 4, 6, 4
    ref = torch.einsum("nhwpqc->nchpwq", tok.reshape(2, h, h, p, p, c)).reshape(2, c, h * p, h * p)
    assert torch.equal(out, ref)


@pytest.mark.parametrize(
    "key,value",
    [("patch_size", 0), ("depth", 0), ("num_heads", 3), ("mlp_ratio", 0), ("learn_sigma", 1), ("num_classes", -2)],
)
def test_invalid_values_name_the_option(key, value):
    with pytest.raises(ConfigError, match=key):
        build("dit", image_size=16, **{**TINY, key: value})


def test_image_size_must_fit_patches():
    with pytest.raises(ConfigError, match=r"dit with patch size 4 needs an image size divisible by 4; 16 or 20 would work, got 18"):
        registry.check_image_size("dit-s/4", {}, 18)
    registry.check_image_size("dit-s/8", {}, 64)


