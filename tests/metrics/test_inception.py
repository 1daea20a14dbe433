"""The FID Inception network has the public weight file's layout, loads it safely and runs."""

import numpy as np
import pytest
import torch

from difforge.errors import UserError
from difforge.metrics import inception
from difforge.metrics.features import extract, load_extractor


def _conv(name, cin, cout, kh, kw=None):
    kw = kh if kw is None else kw
    return {
        f"{name}.conv.weight": (cout, cin, kh, kw),
        f"{name}.bn.weight": (cout,),
        f"{name}.bn.bias": (cout,),
        f"{name}.bn.running_mean": (cout,),
        f"{name}.bn.running_var": (cout,),
    }


def _block_a(p, cin, pool):
    return {**_conv(f"{p}.branch1x1", cin, 64, 1), **_conv(f"{p}.branch5x5_1", cin, 48, 1), **_conv(f"{p}.branch5x5_2", 48, 64, 5),
            **_conv(f"{p}.branch3x3dbl_1", cin, 64, 1), **_conv(f"{p}.branch3x3dbl_2", 64, 96, 3),
            **_conv(f"{p}.branch3x3dbl_3", 96, 96, 3), **_conv(f"{p}.branch_pool", cin, pool, 1)}


def _block_c(p, c7):
    return {**_conv(f"{p}.branch1x1", 768, 192, 1), **_conv(f"{p}.branch7x7_1", 768, c7, 1),
            **_conv(f"{p}.branch7x7_2", c7, c7, 1, 7), **_conv(f"{p}.branch7x7_3", c7, 192, 7, 1),
            **_conv(f"{p}.branch7x7dbl_1", 768, c7, 1), **_conv(f"{p}.branch7x7dbl_2", c7, c7, 7, 1),
            **_conv(f"{p}.branch7x7dbl_3", c7, c7, 1, 7), **_conv(f"{p}.branch7x7dbl_4", c7, c7, 7, 1),
            **_conv(f"{p}.branch7x7dbl_5", c7, 192, 1, 7), **_conv(f"{p}.branch_pool", 768, 192, 1)}


def _block_e(p, cin):
    return {**_conv(f"{p}.branch1x1", cin, 320, 1), **_conv(f"{p}.branch3x3_1", cin, 384, 1),
            **_conv(f"{p}.branch3x3_2a", 384, 384, 1, 3), **_conv(f"{p}.branch3x3_2b", 384, 384, 3, 1),
            **_conv(f"{p}.branch3x3dbl_1", cin, 448, 1), **_conv(f"{p}.branch3x3dbl_2", 448, 384, 3),
            **_conv(f"{p}.branch3x3dbl_3a", 384, 384, 1, 3), **_conv(f"{p}.branch3x3dbl_3b", 384, 384, 3, 1),
            **_conv(f"{p}.branch_pool", cin, 192, 1)}


def public_layout():
    """pt_inception-2015-12-05-6726825d.pth, written out from pytorch-fid's FIDInceptionV3 (aux_logits off)."""
    layout = {
        **_conv("Conv2d_1a_3x3", 3, 32, 3), **_conv("Conv2d_2a_3x3", 32, 32, 3), **_conv("Conv2d_2b_3x3", 32, 64, 3),
        **_conv("Conv2d_3b_1x1", 64, 80, 1), **_conv("Conv2d_4a_3x3", 80, 192, 3),
        **_block_a("Mixed_5b", 192, 32), **_block_a("Mixed_5c", 256, 64), **_block_a("Mixed_5d", 288, 64),
        **_conv("Mixed_6a.branch3x3", 288, 384, 3), **_conv("Mixed_6a.branch3x3dbl_1", 288, 64, 1),
        **_conv("Mixed_6a.branch3x3dbl_2", 64, 96, 3), **_conv("Mixed_6a.branch3x3dbl_3", 96, 96, 3),
        **_block_c("Mixed_6b", 128), **_block_c("Mixed_6c", 160), **_block_c("Mixed_6d", 160), **_block_c("Mixed_6e", 192),
        **_conv("Mixed_7a.branch3x3_1", 768, 192, 1), **_conv("Mixed_7a.branch3x3_2", 192, 320, 3),
        **_conv("Mixed_7a.branch7x7x3_1", 768, 192, 1), **_conv("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
        **_conv("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), **_conv("Mixed_7a.branch7x7x3_4", 192, 192, 3),
        **_block_e("Mixed_7b", 1280), **_block_e("Mixed_7c", 2048),
        "fc.weight": (1008, 2048), "fc.bias": (1008,),
    }
    return layout


def test_layout_matches_the_public_weight_file():
    want = public_layout()
    got = inception.expected_shapes()
    assert got.keys() == want.keys(), (sorted(set(got) ^ set(want))[:10])
    for k, shape in want.items():
        assert got[k] == shape, k


def _random_weight_file(path, layout, gen):
    state = {}
    for k, shape in layout.items():
        if k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=gen) + 0.5
        elif k.endswith("bn.weight"):
            state[k] = torch.rand(shape, generator=gen) * 0.5 + 0.75
        elif k.endswith("conv.weight"):
            state[k] = torch.randn(shape, generator=gen) * (2.0 / np.prod(shape[1:])) ** 0.5
        else:
            state[k] = torch.randn(shape, generator=gen) * 0.05
        if k.startswith("Conv2d_1a") and k.endswith("bn.running_mean"):  # old BN files have these, new ones may
            state[k.replace("running_mean", "num_batches_tracked")] = torch.tensor(0)
    torch.save(state, path)
    return state


def test_load_random_weight_file_and_forward(tmp_path):
    file = tmp_path / inception.WEIGHTS_FILE
    state = _random_weight_file(file, public_layout(), torch.Generator().manual_seed(0))
    ex = load_extractor("inception", inception_weights=file)  # torch.load(weights_only=True) inside
    assert ex.name.startswith("inception-v3-fid:")  # not the published file: its hash is part of the name
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 40, 3), dtype=np.uint8)  # NHWC, resized to 299
    out = extract(ex, [images], ("pool", "spatial", "logits"), progress=False)
    assert out["pool"].shape == (2, 2048) and out["spatial"].shape == (2, 7 * 17 * 17) and out["logits"].shape == (2, 1008)
    assert all(np.isfinite(v).all() for v in out.values())
    assert (out["pool"] >= 0).all()  # a mean of ReLU outputs
    # logits are the bias-free TF softmax/logits/MatMul
    np.testing.assert_allclose(out["logits"], out["pool"] @ state["fc.weight"].numpy().T, rtol=1e-4, atol=1e-4)


def test_batchnorm_folding_keeps_outputs():
    torch.manual_seed(0)
    block = inception._Conv(8, 16, (1, 3), padding=(0, 1)).eval()
    block.bn.running_mean.normal_()
    block.bn.running_var.uniform_(0.5, 2.0)
    block.bn.weight.data.uniform_(0.5, 1.5)
    block.bn.bias.data.normal_()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        want = block(x)
        block.fuse()
        assert isinstance(block.bn, torch.nn.Identity) and block.conv.bias is not None
        torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)


def test_preprocess_scales_to_minus_one_one_at_299():
    x = torch.tensor([0, 255], dtype=torch.uint8).repeat(1, 3, 4, 2)
    y = inception.FIDInception.preprocess(x)
    assert y.shape == (1, 3, 299, 299)
    assert abs(y.min().item() + 1) < 1e-5 and abs(y.max().item() - 1) < 1e-5


def test_wrong_file_layout_is_a_user_error(tmp_path):
    file = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, file)
    with pytest.raises(UserError, match="not the FID Inception weight file"):
        inception.load_fid_inception(file)
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot be read"):
        inception.load_fid_inception(tmp_path / "junk.pth")


def test_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    with pytest.raises(UserError) as e:
        inception.find_weights()
    msg = str(e.value)
    assert inception.WEIGHTS_FILE in msg and "pytorch-fid" in msg and "~/.cache/difforge" in msg and "--inception-weights" in msg
    assert "\n" not in msg
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "w.pth"))
    (tmp_path / "w.pth").write_bytes(b"x")
    assert inception.find_weights() == tmp_path / "w.pth"


def test_download_failure_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)

    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError, match="could not download .*copy it to"):
        inception.load_fid_inception(download=True)
    with pytest.raises(UserError, match="does not exist"):
        inception.load_fid_inception(tmp_path / "nope.pth", download=True)
