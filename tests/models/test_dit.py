import inspect
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from difforge.errors import ConfigError
from difforge.models import build, count_parameters, forward_gflops, registry
from difforge.models.dit import PRESETS, DiT, sincos_pos_embed
from tests.models.netkit import inputs, perturb
from difforge.train.checkpoint import load_model_file, load_weights_into, save_model_file


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


def test_untrained_net_predicts_zero_and_none_is_null_class():
    net = DiT(image_size=16, num_classes=3, **TINY)
    x, t, _ = inputs(net)
    assert net(x, t).abs().max() == 0
    net = make(image_size=16, num_classes=3)
    with torch.no_grad():
        assert torch.equal(net(x, t), net(x, t, torch.tensor([3, 3])))
        assert (net(x, t, torch.tensor([0, 0])) - net(x, t, torch.tensor([1, 1]))).abs().max() > 1e-3


def test_fractional_timesteps():
    net = make(image_size=16)
    x, _, _ = inputs(net, batch=1)
    with torch.no_grad():
        out = {t: net(x, torch.tensor([t])) for t in (10.0, 10.5, 11.0)}
        assert torch.equal(net(x, torch.tensor([10])), out[10.0])
        assert not torch.allclose(out[10.5], out[10.0]) and not torch.allclose(out[10.5], out[11.0])
        mid = (out[10.0] + out[11.0]) / 2
        assert (out[10.5] - mid).abs().max() < (out[11.0] - out[10.0]).abs().max()


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


def test_training_reduces_loss():
    torch.manual_seed(0)
    net = DiT(image_size=16, **{**TINY, "patch_size": 2})
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)  # adaLN-Zero starts every block at the identity
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    x0 = torch.stack([torch.sin(3 * xx + k) * torch.cos(2 * yy - k) for k in range(8)])[:, None].expand(8, 3, 16, 16)
    losses = []
    for _ in range(15):
        t = torch.randint(0, 1000, (8,), generator=g)
        ab = torch.cos((t.float() / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
        noise = torch.randn(x0.shape, generator=g)
        xt = ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * noise
        loss = F.mse_loss(net(xt, t), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:3]) / 3


def test_model_file_round_trip(tmp_path):
    net = make(image_size=16, in_channels=4, num_classes=3, learn_sigma=True)
    meta = {"network": {"name": "dit-s/4", "config": net.config}, "diffusion": {}, "data": {}}
    save_model_file(tmp_path / "m.safetensors", net.state_dict(), meta)
    tensors, meta2 = load_model_file(tmp_path / "m.safetensors")
    assert "pos_embed" in tensors
    again = registry.build(meta2["network"]["name"], **meta2["network"]["config"])
    load_weights_into(again, tensors, "m.safetensors")
    x, t, y = inputs(net)
    with torch.no_grad():
        assert torch.equal(again(x, t, y), net(x, t, y))
