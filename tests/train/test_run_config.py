"""A resume reads its run's config.yaml with the meaning settings had before they existed."""

import yaml

from difforge.config import Config
from difforge.modelfile import read_metadata
from difforge.train.run_config import ABSENT_MEANS, load_run_config
from difforge.train.trainer import Trainer
from tests.conftest import tiny_overrides


def test_absent_settings_take_their_old_meaning_present_ones_stay(tmp_path):
    d = Config().to_dict()
    del d["sr"]["sr_residual"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(d))
    assert load_run_config(tmp_path / "old.yaml").sr.sr_residual is False and Config().sr.sr_residual is True
    d["sr"]["sr_residual"] = True
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(d))
    assert load_run_config(tmp_path / "new.yaml").sr.sr_residual is True
    assert set(ABSENT_MEANS) <= {k for section in Config().to_dict().values() for k in section}  # every entry is a setting


def test_resuming_an_upsampler_from_before_the_residual_default_keeps_it_plain(tmp_path):
    first = Trainer(progress=False, **tiny_overrides(tmp_path, run="old", task="sr", scale=2, sr_residual=False, max_steps=2,
                                                      checkpoint_every=2)).fit()
    cfg = first.run_dir / "config.yaml"
    d = yaml.safe_load(cfg.read_text())
    del d["sr"]["sr_residual"]  # a run made before the setting existed
    cfg.write_text(yaml.safe_dump(d))
    again = Trainer(progress=False, resume=str(first.run_dir), max_steps=4).fit()
    assert again.steps == 4 and "residual" not in read_metadata(again.model_file)["inputs"]["low_res"]
