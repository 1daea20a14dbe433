import pytest

from difforge.config import Config
from difforge.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = Config().override(batch_size=8, noise_schedule="cosine", network_options={"base_channels": 32})
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    back = Config.load(p)
    assert back == cfg and back.train.batch_size == 8 and back.model.network_options == {"base_channels": 32}


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"noise_schedule": "quad"}, ["noise_schedule", "cosine"]),
        ({"batch_size": 0}, ["batch_size"]),
        ({"channels": 2}, ["channels", "1, 3"]),
        ({"precision": "fp8"}, ["precision", "bf16"]),
        ({"label_dropout": 1.5}, ["label_dropout"]),
        ({"run": "a/b"}, ["run"]),
        ({"not_a_field": 1}, ["not_a_field"]),
    ],
)
def test_validation_names_field_and_choices(overrides, words):
    with pytest.raises(ConfigError) as e:
        Config().override(**overrides)
    for w in words:
        assert w in str(e.value)


def test_unknown_yaml_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  batchsize: 3\n")
    with pytest.raises(ConfigError, match="batchsize"):
        Config.load(p)
    p.write_text("trian: {}\n")
    with pytest.raises(ConfigError, match="trian"):
        Config.load(p)
