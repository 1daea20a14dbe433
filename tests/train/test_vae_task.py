import csv

import pytest
import torch
from PIL import Image
from torch.distributions import Normal, kl_divergence

from difforge.config import Config
from difforge.errors import ConfigError
from difforge.codec import load_vae
from difforge.models.vae import AutoencoderKL
from difforge.modelfile import read_metadata
from difforge.train.distributed import DistInfo
from difforge.train.trainer import Trainer
from difforge.train.batches import Batch
from difforge.train.rng import StepRNG
from difforge.train.tasks.vae import VAETask
from tests.conftest import tiny_overrides

TINY_VAE = dict(base_channels=8, num_res_blocks=1, head_channels=8)


def vae_overrides(tmp_path, **kw):
    base = tiny_overrides(tmp_path, task="vae", network="vae", network_options=dict(TINY_VAE), downsample=4,
                          latent_channels=4, builtin_per_class=4, lr=3e-3, max_steps=24)
    base.update(kw)
    return base


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_vae_training_lowers_reconstruction_error_and_validates_every_epoch(tmp_path):
    result = Trainer(progress=False, **vae_overrides(tmp_path)).fit()
    rows = _rows(result.run_dir)
    val = [r for r in rows if r.get("val_psnr")]
    # 16 images / batch 8 = 2 steps per epoch -> validation at steps 2, 4, ..., 24
    assert [int(r["step"]) for r in val] == list(range(2, 25, 2))
    assert float(val[-1]["val_mse"]) < 0.7 * float(val[0]["val_mse"])
    assert float(val[-1]["val_psnr"]) > float(val[0]["val_psnr"])
    assert float(val[-1]["val_ssim"]) > float(val[0]["val_ssim"])
    meta = read_metadata(result.model_file)
    assert meta["kind"] == "vae" and meta["vae"]["val"]["step"] == 24
    vae, _ = load_vae(result.model_file)
    assert isinstance(vae, AutoencoderKL) and vae.latent_shape(16) == (4, 4, 4)
    grid = Image.open(next((result.run_dir / "samples").glob("*.png")))
    assert grid.size == (4 * 16 + 5 * 2, 2 * 16 + 3 * 2)  # inputs row over reconstructions row


def test_loss_is_reconstruction_plus_weighted_kl_per_pixel_value(tmp_path):
    cfg = Config().override(task="vae", network="vae", downsample=4, latent_channels=4, kl_weight=0.3, image_size=16)
    task = VAETask(cfg, DistInfo())
    torch.manual_seed(0)
    net = AutoencoderKL(latent_channels=4, downsample=4, **TINY_VAE)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    terms = task.loss(net, Batch(x), StepRNG(torch.Generator().manual_seed(7), 4, slice(0, 4)))
    assert set(terms) == {"loss", "recon", "kl"} and all(v.shape == (4,) for v in terms.values())
    noise = torch.randn((4, 4, 4, 4), generator=torch.Generator().manual_seed(7))
    post = net.encode(x)
    recon = net.decode(post.mean + post.std * noise)
    kl = kl_divergence(Normal(post.mean, post.std), Normal(0.0, 1.0)).flatten(1).sum(1)
    want = ((recon - x) ** 2).flatten(1).mean(1) + 0.3 * kl / (3 * 16 * 16)
    torch.testing.assert_close(terms["loss"], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["kl"], kl, rtol=1e-5, atol=1e-6)


def test_interrupted_and_resumed_vae_run_equals_uninterrupted(tmp_path):
    full = Trainer(progress=False, **vae_overrides(tmp_path, run="full", max_steps=6)).fit()

    def stop_at_3(trainer, step, loss):
        if step == 3:
            trainer.request_stop()

    part = Trainer(progress=False, callbacks=[stop_at_3], **vae_overrides(tmp_path, run="part", max_steps=6)).fit()
    assert part.interrupted and part.steps == 3
    Trainer(resume=str(part.run_dir), progress=False).fit()
    a, b = _rows(full.run_dir), _rows(part.run_dir)
    assert [r["loss"] for r in a if r.get("loss")] == [r["loss"] for r in b if r.get("loss")]
    assert [r["val_mse"] for r in a if r.get("val_mse")] == [r["val_mse"] for r in b if r.get("val_mse")]


def test_validation_folder_and_clear_errors(tmp_path):
    from difforge.data.builtin import write_dataset

    write_dataset(tmp_path / "val", size=16, per_class=1, seed=9)
    result = Trainer(progress=False, **vae_overrides(tmp_path, val_data=str(tmp_path / "val"), max_steps=2)).fit()
    assert str(tmp_path / "val") in read_metadata(result.model_file)["vae"]["validation"]
    with pytest.raises(ConfigError, match="divisible by 8; 8 or 16 would work, got 12"):
        Trainer(progress=False, **vae_overrides(tmp_path, run="b", downsample=8, image_size=12)).fit()
    with pytest.raises(ConfigError, match="network must be one of vae"):
        Trainer(progress=False, **vae_overrides(tmp_path, run="c", network="adm")).fit()
    with pytest.raises(ConfigError, match="unknown option 'attention_resolutions' for autoencoder"):
        Trainer(progress=False, **vae_overrides(tmp_path, run="d", network_options={"attention_resolutions": [8]})).fit()
    with pytest.raises(ConfigError, match="downsample=3"):
        Config().override(downsample=3)
    with pytest.raises(ConfigError, match="needs vae"):
        Config().override(latent=True)
