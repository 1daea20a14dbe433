import pytest
import torch
from torch import nn

from difforge.errors import ConfigError
from difforge.models import registry


@pytest.fixture
def scratch_registry(monkeypatch):
    """Register test networks without leaking them into other tests."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_available_lists_unet_and_presets():
    names = registry.available()
    assert {"unet", "unet-small", "unet-tiny"} <= set(names)
    assert names == sorted(names)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        registry.build("unte")
    msg = str(err.value)
    assert "'unte'" in msg and "unet, " in msg and "unet-tiny" in msg


def test_unknown_option_names_key_and_network():
    with pytest.raises(ConfigError, match=r"unknown option 'base_channel' for network 'unet-tiny'.*base_channels"):
        registry.build("unet-tiny", base_channel=16)
    with pytest.raises(ConfigError, match="'widht'"):
        registry.check_image_size("unet", {"widht": 3}, 32)


def test_preset_defaults_and_overrides():
    net = registry.build("unet-tiny", image_size=32, base_channels=16)
    assert net.config["base_channels"] == 16  # the caller wins over the preset
    assert net.config["channel_mult"] == registry.options("unet-tiny")["channel_mult"] == [1, 2, 2]
    assert registry.options("unet")["channel_mult"] == (1, 2, 2, 2)


def test_register_generic_network(scratch_registry):
    @registry.register("toy")
    class Toy(nn.Module):
        def __init__(self, width: int, image_size: int = 8):
            super().__init__()
            self.config = dict(width=width, image_size=image_size)
            self.lin = nn.Linear(width, width)

    registry.register("toy-wide", width=64)(Toy)
    assert {"toy", "toy-wide"} <= set(registry.available())
    assert registry.build("toy-wide").lin.in_features == 64
    with pytest.raises(ConfigError, match="needs option 'width'"):
        registry.build("toy")
    registry.check_image_size("toy-wide", {}, 13)  # no hook: any size
    with pytest.raises(ValueError, match="already registered"):
        registry.register("toy")(nn.Linear)


def test_builder_function_with_hook(scratch_registry):
    def check(image_size, config):
        if image_size != config["size"]:
            raise ConfigError(f"only {config['size']}")

    def make(size=4):
        return nn.Identity()

    make.check_image_size = check
    registry.register("fixed")(make)
    registry.check_image_size("fixed", {}, 4)
    with pytest.raises(ConfigError, match="only 6"):
        registry.check_image_size("fixed", {"size": 6}, 4)
    assert isinstance(registry.build("fixed", size=2), nn.Identity)


def test_build_gives_fresh_weights_per_seed():
    torch.manual_seed(0)
    a = registry.build("unet-tiny", image_size=16)
    torch.manual_seed(0)
    b = registry.build("unet-tiny", image_size=16)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_default_levels_adapt_to_the_latent():
    base = {"image_size": 8, "in_channels": 4, "num_classes": 0, "learn_sigma": False}
    assert registry.fit_levels("unet", base, {})["channel_mult"] == [1, 2]  # 8 -> 4: levels stop at 4x4
    assert registry.fit_levels("unet", dict(base, image_size=16), {})["channel_mult"] == [1, 2, 2]
    assert registry.fit_levels("adm", base, {})["channel_mult"] == [1, 2]
    assert registry.fit_levels("unet", dict(base, image_size=32), {}) is not None
    assert "channel_mult" not in registry.fit_levels("dit", base, {})
    mine = dict(base, channel_mult=[1, 2, 2, 2])
    assert registry.fit_levels("unet", mine, {"channel_mult": [1, 2, 2, 2]}) is mine
