"""UNet option ``text_layout``: a coarse map from the pooled caption added to the first features.
It starts as the network without it, it puts a caption's effect where its map says (a map that
lights one cell changes the features there only), and bad values are refused by name."""

import pytest
import torch

from difforge.errors import ConfigError
from difforge.models import registry
from difforge.models.text_encoder import TextLayout, WordTokenizer

from .test_text_cond import FAMILIES, TEXT


def _net(layout: int, tok):
    torch.manual_seed(0)
    return registry.build("unet-tiny", image_size=16, in_channels=3, context_dim=16, text_encoder=dict(TEXT, vocab_size=len(tok.vocab), pool="words"),
                          text_layout=layout, **FAMILIES["unet-tiny"])


def _first_features(net, x, t, ids):
    seen = []
    hook = net.down[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        out = net(x, t, context=ids)
    hook.remove()
    return seen[0], out


def test_layout_starts_as_the_network_without_it_and_acts_where_its_map_says():
    tok = WordTokenizer.build(["a crack at the top left", "a crack at the bottom right"], max_length=8)
    plain, placed = _net(0, tok), _net(4, tok)
    missing, unexpected = placed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["text_layout.proj.bias", "text_layout.proj.weight"]
    x, t, ids = torch.randn(2, 3, 16, 16), torch.tensor([300.0, 600.0]), tok.encode(["a crack at the top left"] * 2)
    h0, out0 = _first_features(plain, x, t, ids)
    h1, out1 = _first_features(placed, x, t, ids)
    assert torch.equal(h0, h1) and torch.allclose(out0, out1, atol=1e-6)  # zero-initialised: the same function
    with torch.no_grad():  # light the top-left cell of channel 0 for every caption
        placed.text_layout.proj.bias.view(-1, 4, 4)[0, 0, 0] = 1.0
    h2, _ = _first_features(placed, x, t, ids)
    diff = (h2 - h1).abs()
    assert diff[:, 1:].abs().max() == 0  # only channel 0
    assert torch.allclose(diff[:, 0, :2, :2], torch.ones(2, 2, 2))  # the full value in the cell's corner
    assert diff[:, 0, :6, :6].sum() == diff.sum()  # and nothing beyond the bilinear reach of the top-left cell


def test_layout_map_is_the_bilinear_resize_of_the_projected_grid():
    layout = TextLayout(4, 2, 3)
    with torch.no_grad():
        layout.proj.weight.normal_()
    pooled = torch.randn(5, 4)
    grid = layout.proj(pooled).reshape(5, 2, 3, 3)
    out = layout(pooled, (9, 9))
    assert out.shape == (5, 2, 9, 9)
    assert torch.allclose(out[:, :, 1::3, 1::3], grid, atol=1e-6)  # each cell's centre pixel is the cell's value


@pytest.mark.parametrize("bad", [-1, 2.5, "4", True])
def test_bad_layout_values_are_named(bad):
    tok = WordTokenizer.build(["a crack"], max_length=8)
    with pytest.raises(ConfigError, match="text_layout"):
        _net(bad, tok)


def test_layout_reads_the_sum_of_the_words_so_a_word_adds_the_same_map_in_any_caption():
    tok = WordTokenizer.build(["crack at the top", "on wood"], max_length=8)
    net = _net(4, tok)
    with torch.no_grad():
        net.text_layout.proj.weight.normal_()
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([300.0])
    maps = {}
    for caption in ("crack", "at the top", "crack at the top", ""):
        h, _ = _first_features(net, x, t, tok.encode([caption]))
        maps[caption] = h
    # the first features are conv(x) + map(sum of words): the map of "crack at the top" is that of "crack" plus that of "at the top"
    assert torch.allclose(maps["crack at the top"] - maps[""], (maps["crack"] - maps[""]) + (maps["at the top"] - maps[""]), atol=1e-5)


def test_a_low_rank_layout_draws_r_maps_and_spreads_them_over_the_channels():
    tok = WordTokenizer.build(["a crack at the top left"], max_length=8)
    torch.manual_seed(0)
    net = registry.build("unet-tiny", image_size=16, in_channels=3, context_dim=16, text_layout=4, layout_rank=1,
                         text_encoder=dict(TEXT, vocab_size=len(tok.vocab), pool="words"), **FAMILIES["unet-tiny"])
    layout = net.text_layout
    assert layout.proj.out_features == 16 and layout.spread.weight.shape == (16, 1, 1, 1)
    with torch.no_grad():
        layout.proj.weight.normal_()
    pooled = torch.randn(2, 16)
    out = layout(pooled, (8, 8))
    one = torch.nn.functional.interpolate(layout.proj(pooled).reshape(2, 1, 4, 4), size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(out, one * layout.spread.weight.reshape(1, 16, 1, 1), atol=1e-6)  # every channel a multiple of one map


def test_decoder_layouts_add_their_map_to_each_decoder_level_and_start_at_zero():
    tok = WordTokenizer.build(["a crack at the top left"], max_length=8)
    build = lambda **k: registry.build("unet-tiny", image_size=16, in_channels=3, context_dim=16, text_layout=4,  # noqa: E731
                                       text_encoder=dict(TEXT, vocab_size=len(tok.vocab), pool="words"), **FAMILIES["unet-tiny"], **k)
    torch.manual_seed(0)
    plain = build()
    net = build(layout_decoder=True)
    missing, unexpected = net.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("decoder_layouts.") for k in missing)
    levels = len(net.config["channel_mult"])
    firsts = [i for i in range(len(net.up)) if i % (net.config["num_res_blocks"] + 1) == 0]
    assert sorted(map(int, net.decoder_layouts)) == firsts and len(firsts) == levels  # one map per decoder level, at its first stage
    x, t, ids = torch.randn(2, 3, 16, 16), torch.tensor([300.0, 600.0]), tok.encode(["a crack at the top left"] * 2)
    with torch.no_grad():
        assert torch.allclose(net(x, t, context=ids), plain(x, t, context=ids), atol=1e-6)  # zero-initialised: the same function
    for key in net.decoder_layouts:
        seen = []
        hook = net.up[int(key)].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
        with torch.no_grad():
            net(x, t, context=ids)
            net.decoder_layouts[key].proj.bias.view(-1, 4, 4)[0, 0, 0] = 1.0  # light the top-left cell of channel 0
            net(x, t, context=ids)
            net.decoder_layouts[key].proj.bias.zero_()
        hook.remove()
        diff = (seen[1] - seen[0]).abs()
        assert diff[:, 1:].max() == 0 and diff[:, 0, 0, 0].min() > 0.5  # channel 0 of the decoder input, at the top left



def test_cross_resolutions_place_cross_attention_apart_from_self_attention():
    """``cross_resolutions`` puts cross-attention where the caption should act (here at 16 and 8 px) without
    self-attention there; by default it follows ``attention_resolutions`` (here none but the middle block's)."""
    from difforge.models.layers import Attention2d, CrossAttention2d

    tok = WordTokenizer.build(["a crack at the top left", "a scratch"], max_length=8)

    def build(**k):
        torch.manual_seed(0)
        return registry.build("unet-tiny", image_size=16, in_channels=3, context_dim=16,
                              text_encoder=dict(TEXT, vocab_size=len(tok.vocab), pool="words"), **FAMILIES["unet-tiny"], **k)

    def kinds(stages):
        return [[type(m).__name__ for m in stage.modules() if isinstance(m, (Attention2d, CrossAttention2d))] for stage in stages]

    plain, crossed = build(), build(cross_resolutions=[16, 8])
    assert kinds(plain.down) == [[], [], []] and kinds(plain.up) == [[]] * 4
    assert kinds(crossed.down) == [["CrossAttention2d"], [], ["CrossAttention2d"]]  # 16 px, the downsampling, 8 px
    assert kinds(crossed.up) == [["CrossAttention2d"]] * 4
    assert crossed.config["cross_resolutions"] == [16, 8] and plain.config["cross_resolutions"] is None
    rebuilt = registry.build("unet-tiny", **crossed.config)  # the model file's config rebuilds it
    assert kinds(rebuilt.down) == kinds(crossed.down)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([300.0])
    for net in (plain, crossed):  # the output of the first (16 px) stage: only a cross-attention there reads the caption
        for m in net.modules():
            if isinstance(m, CrossAttention2d):
                torch.nn.init.normal_(m.attn.proj.weight)  # the zero-initialised output projection, made to act
        seen = []
        hook = net.down[0].register_forward_hook(lambda m, args, out: seen.append(out.detach().clone()))
        with torch.no_grad():
            net(x, t, context=tok.encode(["a crack at the top left"]))
            net(x, t, context=tok.encode(["a scratch"]))
        hook.remove()
        assert torch.equal(seen[0], seen[1]) == (net is plain)
    with pytest.raises(ConfigError, match="cross_resolutions"):
        build(cross_resolutions=[0])
