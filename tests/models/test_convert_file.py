"""Conversion configs: presets, option files, class names (the CLI round trips are in test_convert.py)."""

import json

import pytest

from difforge.errors import UserError
from difforge.models.convert_file import SOURCES, read_class_names, read_config


def test_sources_are_the_converters():
    from difforge.cli.convert import SOURCES as CLI_SOURCES

    assert SOURCES == ("openai-adm", "dit", "iddm")
    assert set(CLI_SOURCES) == set(SOURCES)


def test_presets_and_files(tmp_path):
    options, preset = read_config("adm-imagenet64", "openai-adm")
    assert preset == "adm-imagenet64" and options["image_size"] == 64
    assert read_config(None, "dit") == ({}, None)
    (tmp_path / "c.json").write_text(json.dumps({"image_size": 32, "learn_sigma": True}))
    (tmp_path / "c.yaml").write_text("image_size: 32\nclass_cond: false\n")
    assert read_config(str(tmp_path / "c.json"), "openai-adm") == ({"image_size": 32, "learn_sigma": True}, None)
    assert read_config(str(tmp_path / "c.yaml"), "openai-adm") == ({"image_size": 32, "class_cond": False}, None)


def test_bad_configs_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a dit preset"):
        read_config("nope", "dit")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        read_config(str(tmp_path / "list.yaml"), "dit")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="could not be parsed"):
        read_config(str(tmp_path / "bad.json"), "dit")


def test_class_names_from_text_or_file(tmp_path):
    assert read_class_names(None) is None
    assert read_class_names("cat, dog,") == ["cat", "dog"]
    (tmp_path / "names.txt").write_text("cat\n\ndog\n")
    assert read_class_names(str(tmp_path / "names.txt")) == ["cat", "dog"]
