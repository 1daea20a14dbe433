"""Every number a user can set, given a bad value through the CLI: exit 2, one line naming the field, no traceback."""

import math
import subprocess
import sys

import pytest

from difforge.cli.main import main
from difforge.config import NUMBERS, Config
from difforge.errors import ConfigError

# (flag, bad value, the field the message must name)
TRAIN_BAD = [
    ("--grad-clip", "nan", "grad_clip"),
    ("--grad-clip", "inf", "grad_clip"),
    ("--grad-clip", "0", "grad_clip"),
    ("--lr", "-1", "lr"),
    ("--lr", "nan", "lr"),
    ("--lr", "inf", "lr"),
    ("--lr", "5", "lr"),
    ("--ema-decay", "1.5", "ema_decay"),
    ("--ema-decay", "nan", "ema_decay"),
    ("--label-dropout", "2", "label_dropout"),
    ("--label-dropout", "-0.1", "label_dropout"),
    ("--image-size", "1000000", "image_size"),
    ("--image-size", "4", "image_size"),
    ("--batch-size", "0", "batch_size"),
    ("--batch-size", "-1", "batch_size"),
    ("--max-minutes", "nan", "max_minutes"),
    ("--max-minutes", "-2", "max_minutes"),
    ("--max-steps", "0", "max_steps"),
    ("--epochs", "-3", "epochs"),
    ("--weight-decay", "inf", "weight_decay"),
    ("--warmup-steps", "-5", "warmup_steps"),
    ("--grad-accum", "0", "grad_accum"),
    ("--p2-gamma", "nan", "p2_gamma"),
    ("--snr-gamma", "0", "snr_gamma"),
    ("--diffusion-steps", "0", "diffusion_steps"),
    ("--seed", "-1", "seed"),
    ("--checkpoint-every", "0", "checkpoint_every"),
    ("--preview-num", "0", "preview_num"),
    ("--eval-num", "0", "eval_num"),
    ("--builtin-per-class", "0", "builtin_per_class"),
    ("--noise-aug", "2", "noise_aug"),
    ("--noise-aug", "nan", "noise_aug"),
]

SAMPLE_BAD = [
    ("--cfg", "nan", "cfg"),
    ("--cfg", "inf", "cfg"),
    ("--cfg-rescale", "5", "cfg_rescale"),
    ("--cfg-rescale", "nan", "cfg_rescale"),
    ("--eta", "-1", "eta"),
    ("--eta", "nan", "eta"),
    ("--threshold", "2", "threshold"),
    ("--threshold", "nan", "threshold"),
    ("--batch-size", "0", "batch_size"),
    ("--batch-size", "-1", "batch_size"),
    ("--steps", "0", "steps"),
    ("--classifier-scale", "nan", "classifier_scale"),
    ("--classifier-scale", "inf", "classifier_scale"),
    ("--num", "0", "num"),
    ("--num", "-4", "num"),
]


def _one_line(capsys, code, field):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [l for l in err.strip().splitlines() if "error" in l]
    assert len(lines) == 1, err
    assert field in lines[0], (field, err)
    return lines[0]


@pytest.mark.parametrize("flag,value,field", TRAIN_BAD, ids=[f"{f}={v}" for f, v, _ in TRAIN_BAD])
def test_train_rejects_bad_number(tmp_path, capsys, flag, value, field):
    code = main(["train", "--runs-dir", str(tmp_path), "--quiet", flag, value])
    line = _one_line(capsys, code, field)
    assert "must be" in line
    assert not (tmp_path / "default").exists()  # refused before anything was written


@pytest.mark.parametrize("flag,value,field", SAMPLE_BAD, ids=[f"{f}={v}" for f, v, _ in SAMPLE_BAD])
def test_sample_rejects_bad_number(tiny_model, tmp_path, capsys, flag, value, field):
    out = tmp_path / "out"
    code = main(["sample", str(tiny_model), "--num", "2", "--steps", "2", "--quiet", "--out", str(out), flag, value])
    _one_line(capsys, code, field)
    assert not out.exists() or not any(out.iterdir())


def test_message_names_the_range():
    with pytest.raises(ConfigError, match=r"image_size=1000000 must be in \[8, 4096\]"):
        Config().override(image_size=1_000_000)
    with pytest.raises(ConfigError, match=r"ema_decay=1.5 must be in \[0, 1\)"):
        Config().override(ema_decay=1.5)
    with pytest.raises(ConfigError, match=r"grad_clip=nan must be a finite number"):
        Config().override(grad_clip=math.nan)


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_every_number_refuses_nan_and_wrong_types(name):
    integer = NUMBERS[name][0]
    for bad in ([math.nan, math.inf, -math.inf, "8", True] + ([2.5] if integer else [])):
        with pytest.raises(ConfigError, match=name):
            Config().override(**{name: bad})


def _bool_fields():
    import dataclasses

    from difforge.config import SECTIONS

    return sorted(f.name for klass in SECTIONS.values() for f in dataclasses.fields(klass) if f.type == "bool")


@pytest.mark.parametrize("name", _bool_fields())
def test_every_bool_setting_refuses_texts_and_numbers(name):
    """A YAML `yes`/`"false"` or a 0/1 is not silently truthy: the field is named."""
    for bad in ("false", "yes", 1, 0.0, None):
        with pytest.raises(ConfigError, match=f"{name}=.*true or false"):
            Config().override(**{name: bad}) if bad is not None else Config.from_dict({_section(name): {name: None}})
    assert len(_bool_fields()) >= 14  # the table is found (annotations read as text; compile became auto|bool)


def _section(name):
    from difforge.config import field_sections

    return field_sections()[name]


def test_every_numeric_field_is_in_the_table():
    """A new int/float field must get a range (or this test names it)."""
    import dataclasses

    from difforge.config import SECTIONS

    numeric = set()
    for klass in SECTIONS.values():
        for f in dataclasses.fields(klass):
            if str(f.type).replace("Optional[", "").rstrip("]") in ("int", "float"):
                numeric.add(f.name)
    missing = numeric - set(NUMBERS) - {"channels", "downsample"}  # choices, checked by _choice
    assert not missing, f"add these to difforge.config.NUMBERS: {sorted(missing)}"


def test_yaml_config_with_a_bad_number(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  grad_clip: .nan\n")
    with pytest.raises(ConfigError, match="grad_clip"):
        Config.load(cfg)


def test_subprocess_has_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "difforge", "train", "--runs-dir", str(tmp_path), "--image-size", "1000000"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "image_size=1000000" in res.stderr
