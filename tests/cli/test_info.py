"""`difforge info` of a VAE file (models.info.describe_vae over codec.load_vae)."""

import json

from difforge.cli.main import main
from tests.train.test_latent_data import vae_file  # noqa: F401 (a fixture)


def test_info_describes_a_vae_file(vae_file, capsys):  # noqa: F811
    assert main(["info", str(vae_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "vae" and info["file"] == str(vae_file)
    assert info["parameters"] > 0 and info["latent_shape"].count("x") == 2
    assert {"network_config", "training", "validation", "trained"} <= set(info)
