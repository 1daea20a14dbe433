"""Config overrides from flat values and network options (what `difforge train` builds from its flags)."""

import pytest

from difforge.errors import ConfigError
from difforge.train.start import config_overrides, network_options, parse_option_value


def test_only_set_config_fields_become_overrides():
    got = config_overrides({"batch_size": 8, "lr": None, "quiet": True, "not_a_field": 1})
    assert got == {"batch_size": 8}


def test_network_options_parse_lists_and_key_value_items():
    got = network_options({"channel_mult": "1,2,2", "attention_resolutions": "16", "dropout": 0.1, "act": None},
                          ["num-heads=4", "use_scale_shift_norm=true", "name=a=b"])
    assert got == {"channel_mult": [1, 2, 2], "attention_resolutions": [16], "dropout": 0.1,
                   "num_heads": 4, "use_scale_shift_norm": True, "name": "a=b"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        network_options({}, ["oops"])
    with pytest.raises(ConfigError, match="channel_mult"):
        network_options({"channel_mult": "1,x"})


def test_overrides_merge_network_options_and_vae_means_latent():
    got = config_overrides({"vae": "v.safetensors"}, {"base_channels": 32}, ["dropout=0"])
    assert got == {"vae": "v.safetensors", "latent": True, "network_options": {"base_channels": 32, "dropout": 0}}
    assert config_overrides({"vae": "v.safetensors", "latent": False})["latent"] is False


def test_option_values_read_as_yaml():
    assert parse_option_value("[1, 2]") == [1, 2] and parse_option_value("x: [") == "x: ["
