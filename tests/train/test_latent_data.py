import pytest
import torch

from difforge.errors import ConfigError
from difforge.modelfile import read_metadata
from difforge.models.vae import AutoencoderKL
from difforge.pipeline import Pipeline
from difforge.train.latent_data import encode_images, scale_factor
from difforge.train.trainer import Trainer
from tests.conftest import tiny_overrides
from tests.train.test_vae_task import vae_overrides


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    return Trainer(progress=False, **vae_overrides(tmp, max_steps=6)).fit().model_file


@pytest.fixture
def count_encoded(monkeypatch):
    """Number of images that went through the VAE encoder."""
    seen = {"n": 0}
    original = AutoencoderKL.encode

    def counting(self, x):
        seen["n"] += len(x)
        return original(self, x)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    return seen


def latent_overrides(tmp_path, vae_file, **kw):
    return tiny_overrides(tmp_path, **{"latent": True, "vae": str(vae_file), "builtin_per_class": 4, "max_steps": 6, **kw})


def test_latent_training_end_to_end(tmp_path, vae_file, count_encoded):
    result = Trainer(progress=False, **latent_overrides(tmp_path, vae_file, hflip=False)).fit()
    assert count_encoded["n"] == 16  # 4 classes x 4 images, each encoded once for 6 steps of batch 8
    meta = read_metadata(result.model_file)
    link = meta["latent"]
    assert meta["data"]["image_size"] == 16 and meta["network"]["config"]["image_size"] == 4
    assert meta["network"]["config"]["in_channels"] == 4 and link["latent_size"] == 4 and link["latent_channels"] == 4
    # the stored scale factor is 1/std of the cached latents (the cache file in the run folder)
    from safetensors.torch import load_file

    cache = load_file(str(next((result.run_dir / "latents").glob("*.safetensors"))))
    assert cache["mean"].shape == (1, 16, 4, 4, 4)
    g = torch.Generator().manual_seed(0)
    z = torch.cat([cache["mean"] + cache["std"] * torch.randn(cache["mean"].shape, generator=g) for _ in range(200)])
    assert link["scale_factor"] == pytest.approx(1 / z.std().item(), rel=0.01)
    # samples decode to pixels, the right size and count, with no flag but the model file
    pipe = Pipeline.from_checkpoint(result.model_file, device="cpu")
    out = pipe.generate(num=5, steps=4)
    assert out.images.shape == (5, 16, 16, 3) and out.images.dtype == torch.uint8
    assert len(list((result.run_dir / "samples").glob("step_*.png"))) == 1
    # resume reads the latents from the run folder: the encoder does not run again
    count_encoded["n"] = 0
    Trainer(resume=str(result.run_dir), progress=False, max_steps=8).fit()
    assert count_encoded["n"] == 0


def test_hflip_encodes_each_mirror_image_once(tmp_path, vae_file, count_encoded):
    Trainer(progress=False, **latent_overrides(tmp_path, vae_file, max_steps=2, latent_cache=False, hflip=True)).fit()
    assert count_encoded["n"] == 32
    assert not (tmp_path / "runs" / "t" / "latents").exists()


def test_mirror_view_is_the_encoding_of_the_flipped_image(vae_file):
    from difforge.codec import load_vae

    vae, _ = load_vae(vae_file)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    cache = encode_images(vae, images, torch.device("cpu"), hflip=True)
    flipped = vae.encode(images.flip(-1).float() / 127.5 - 1)
    torch.testing.assert_close(cache["mean"][1], flipped.mean)
    torch.testing.assert_close(cache["std"][1], flipped.std)


def test_scale_factor_closed_form():
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(50, 4, 3, 3, generator=g) * 3 + 1
    std = torch.rand(50, 4, 3, 3, generator=g)
    z = torch.cat([mean + std * torch.randn(mean.shape, generator=g) for _ in range(400)])
    assert scale_factor(mean, std) == pytest.approx(1 / z.double().std().item(), rel=0.01)
    with pytest.raises(ConfigError, match="no variance"):
        scale_factor(torch.zeros(2, 1), torch.zeros(2, 1))


@pytest.mark.parametrize("network,options", [
    ("adm", {"num_channels": 16, "num_res_blocks": 1, "channel_mult": [1, 2], "attention_resolutions": [2], "num_head_channels": 16}),
    ("dit", {"depth": 1, "hidden_size": 32, "num_heads": 2, "patch_size": 2}),
])
def test_latent_training_with_adm_and_dit(tmp_path, vae_file, network, options):
    result = Trainer(progress=False, **latent_overrides(tmp_path, vae_file, network=network, network_options=options, max_steps=2)).fit()
    out = Pipeline.from_checkpoint(result.model_file, device="cpu").generate(num=2, steps=3)
    assert out.images.shape == (2, 16, 16, 3)


def test_latent_size_errors_name_pixel_sizes(tmp_path, vae_file):
    with pytest.raises(ConfigError, match="image size 24 px with the 4x VAE gives a 6x6 latent.*sizes that work: 16 or 32 px"):
        Trainer(progress=False, **latent_overrides(tmp_path, vae_file, image_size=24, network="dit",
                                                   network_options={"depth": 1, "hidden_size": 32, "num_heads": 2, "patch_size": 4})).fit()
    with pytest.raises(ConfigError, match="--image-size is in pixels: a VAE with downsample 4 needs .* 16 or 20 would work, got 18"):
        Trainer(progress=False, **latent_overrides(tmp_path, vae_file, image_size=18)).fit()
    with pytest.raises(ConfigError, match="encodes 3-channel images, but the data has channels=1"):
        Trainer(progress=False, **latent_overrides(tmp_path, vae_file, channels=1)).fit()
    with pytest.raises(ConfigError, match="does not exist"):
        Trainer(progress=False, **latent_overrides(tmp_path, tmp_path / "nope.safetensors")).fit()


def test_cli_train_vae_then_latent_diffusion_with_iddm_flags(tmp_path):
    from difforge.cli.main import main

    runs = str(tmp_path / "runs")
    common = ["--runs-dir", runs, "--image_size", "16", "--builtin-per-class", "2", "--batch-size", "8",
              "--precision", "fp32", "--quiet", "--preview-num", "2", "--preview-steps", "2"]
    assert main(["train-vae", "--run_name", "v", "--latent_channels", "4", "--downsample", "4", "--loss", "mse_kl",
                 "--base-channels", "8", "--no-attention", "--max-steps", "2", *common]) == 0
    vae = tmp_path / "runs" / "v" / "checkpoints" / "ema.safetensors"
    assert read_metadata(vae)["network"]["config"]["attention"] is False
    assert main(["train", "--run_name", "d", "--latent", "--autoencoder_network", "vae", "--autoencoder_ckpt", str(vae),
                 "--base-channels", "16", "--channel-mult", "1,2", "--max-steps", "2", *common]) == 0
    model = tmp_path / "runs" / "d" / "checkpoints" / "ema.safetensors"
    assert main(["sample", str(model), "--num", "2", "--steps", "2", "--quiet", "--out", str(tmp_path / "s")]) == 0
    assert len(list((tmp_path / "s").glob("*.png"))) == 2
    assert main(["train", "--run", "e", "--latent", *common]) == 2  # --latent without --vae: one clear line


def test_text_conditioned_latent_model_trains_and_follows_prompts(tmp_path, vae_file):
    """Text with latent diffusion: the captions stay aligned with the cached latents, previews and
    prompts decode to pixels, and the prompt changes the sample."""
    result = Trainer(progress=False, **latent_overrides(tmp_path, vae_file, text_encoder="builtin", conditional=False,
                                                        preview_num=2, preview_steps=2)).fit()
    meta = read_metadata(result.model_file)
    assert meta["text"]["encoder"] == "builtin" and meta["latent"]["latent_size"] == 4
    pipe = Pipeline.from_checkpoint(result.model_file, device="cpu")
    a = pipe.generate(2, prompt="a large scratch on wood", steps=3, sampler="ddim", seed=1).images
    b = pipe.generate(2, prompt="a crack at the top on brushed steel", steps=3, sampler="ddim", seed=1).images
    assert a.shape == (2, 16, 16, 3) and not torch.equal(a, b)
