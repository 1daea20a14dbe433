import pytest
import torch
from torch.distributions import Normal, kl_divergence

from difforge.errors import ConfigError
from difforge.models import registry
from difforge.models.vae import AutoencoderKL, DiagonalGaussian, build_vae

TINY = dict(base_channels=8, num_res_blocks=1, head_channels=8)


@pytest.mark.parametrize("downsample", [4, 8])
@pytest.mark.parametrize("latent_channels", [4, 8])
def test_encoder_decoder_shapes(downsample, latent_channels):
    vae = AutoencoderKL(in_channels=3, latent_channels=latent_channels, downsample=downsample, **TINY)
    x = torch.randn(2, 3, 32, 32)
    post = vae.encode(x)
    s = 32 // downsample
    assert post.mean.shape == post.logvar.shape == (2, latent_channels, s, s)
    assert vae.latent_shape(32) == (latent_channels, s, s)
    assert vae.decode(post.sample()).shape == x.shape
    recon, _ = vae(x)
    assert recon.shape == x.shape


def test_grayscale_and_no_attention():
    vae = AutoencoderKL(in_channels=1, latent_channels=4, downsample=4, attention=False, **TINY)
    assert not any("attn" in type(m).__name__.lower() for m in vae.modules())
    assert vae(torch.randn(1, 1, 16, 16))[0].shape == (1, 1, 16, 16)


def test_kl_matches_torch_distributions_closed_form():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    post = DiagonalGaussian(mean, logvar)
    ref = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(post.kl().double(), ref)
    assert torch.all(DiagonalGaussian(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)).kl() == 0)


def test_sample_is_reparametrised_and_seeded():
    mean, logvar = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    m, lv = mean.clone().requires_grad_(), logvar.clone().requires_grad_()
    post = DiagonalGaussian(m, lv)
    a = post.sample(torch.Generator().manual_seed(1))
    b = post.sample(torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, post.mode())
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, mean + (0.5 * logvar).exp() * eps)
    a.sum().backward()
    assert m.grad is not None and lv.grad is not None and lv.grad.abs().sum() > 0
    many = DiagonalGaussian(torch.full((20000, 1, 1, 1), 0.5), torch.full((20000, 1, 1, 1), 2.0 * torch.tensor(0.3).log()))
    z = many.sample(torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(0.5, abs=0.01) and z.std().item() == pytest.approx(0.3, abs=0.01)


def test_rebuilds_from_its_config_and_rejects_bad_options():
    vae = build_vae("vae", latent_channels=8, downsample=4, **TINY)
    again = build_vae(vae.arch, **vae.config)
    again.load_state_dict(vae.state_dict())
    assert vae.config["channel_mult"] == [1, 2, 4]
    with pytest.raises(ConfigError, match="power of two"):
        AutoencoderKL(downsample=6)
    with pytest.raises(ConfigError, match="channel_mult needs 4 entries"):
        AutoencoderKL(downsample=8, channel_mult=[1, 2])
    with pytest.raises(ConfigError, match="unknown autoencoder"):
        build_vae("vqgan")
    with pytest.raises(ConfigError, match="divisible by 8; 56 or 64 would work, got 60"):
        vae8 = AutoencoderKL(downsample=8, **TINY)
        vae8.latent_shape(60)


def test_vae_is_not_a_denoising_network():
    assert not any(name.startswith("vae") for name in registry.available())


def test_vae_is_built_through_the_registry():
    assert registry.available("autoencoder") == ["vae"] and registry.kind_of("vae") == "autoencoder"
    vae = registry.build("vae", latent_channels=8, downsample=4, **TINY)
    assert isinstance(vae, AutoencoderKL) and registry.build(vae.arch, **vae.config).config == vae.config
    with pytest.raises(ConfigError, match="unknown option 'image_size' for autoencoder 'vae'"):
        registry.build("vae", image_size=32)
    with pytest.raises(ConfigError, match="unknown autoencoder 'unet'"):
        build_vae("unet")


def test_short_training_lowers_reconstruction_error():
    from difforge.data.builtin import generate_arrays

    arrays, _, _ = generate_arrays(size=16, per_class=4, seed=0, channels=3)
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    torch.manual_seed(0)
    vae = AutoencoderKL(latent_channels=4, downsample=4, **TINY)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)

    def mse():
        with torch.no_grad():
            return (vae.decode(vae.encode(x).mode()) - x).pow(2).mean().item()

    before = mse()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        recon, post = vae(x, noise=torch.randn(len(x), *vae.latent_shape(16), generator=g))
        loss = (recon - x).pow(2).mean() + 1e-4 * post.kl().mean() / x[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mse() < 0.5 * before
