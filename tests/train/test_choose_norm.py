"""A new UNet run normalises per pixel (``norm: channel``); fine-tunes, other tools' presets and other networks keep theirs."""

from difforge.config import Config
from difforge.modelfile import read_metadata
from difforge.train import autonet
from difforge.train.presets import preset_values
from difforge.train.trainer import Trainer

from ..conftest import TINY_NET, tiny_overrides


def test_a_new_unet_run_gets_channel_norm_unless_told():
    cfg = Config()
    assert autonet.choose_norm(cfg).model.network_options == {"norm": "channel"}
    assert autonet.choose_norm(cfg.override(network="auto")).model.network_options == {"norm": "channel"}
    mine = cfg.override(network_options={"norm": "group"})
    assert autonet.choose_norm(mine) is mine
    for other in ("dit-s/2", "adm", "cspdarkunet-small"):  # networks without the option keep their own
        assert autonet.choose_norm(cfg.override(network=other)).model.network_options == {}
    for name in ("iddm", "classic"):  # other tools' recipes are GroupNorm UNets
        assert preset_values(name)["network_options"]["norm"] == "group"


def test_the_run_records_it_and_a_fine_tune_keeps_its_files_norm(tmp_path):
    r = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=1, network_options=dict(TINY_NET))).fit()
    assert read_metadata(r.model_file)["network"]["config"]["norm"] == "channel"
    assert Config.load(r.run_dir / "config.yaml").model.network_options["norm"] == "channel"
    old = Trainer(progress=False, **tiny_overrides(tmp_path, run="old", max_steps=1, network_options={**TINY_NET, "norm": "group"})).fit()
    tuned = Trainer(progress=False, pretrain=str(old.model_file), **tiny_overrides(tmp_path, run="ft", max_steps=1)).fit()
    assert read_metadata(tuned.model_file)["network"]["config"]["norm"] == "group"
    assert autonet.choose_norm(Config(), pretrain=str(old.model_file)).model.network_options["norm"] == "group"
