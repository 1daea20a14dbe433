"""difforge export refuses bad input with one line and writes nothing; splits; the missing-extra message."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from difforge.cli.main import main
from difforge.errors import UserError
from difforge.export.datasets import export_dataset
from difforge.export.datasets import run as export_run
from difforge.export.datasets.split import assign, counts, parse_split
from tests.export.datasets_kit import pairs_source, synth_source


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return pairs_source(tmp_path_factory.mktemp("err_src") / "pairs", size=16, per_class=2)


def _cli(argv, capsys):
    rc = main(["export", *map(str, argv), "--quiet"])
    return rc, capsys.readouterr()


def _left(parent: Path) -> list:
    return sorted(p.name for p in parent.iterdir())


def test_images_without_masks_for_a_segmentation_format(tmp_path, pairs, capsys):
    plain = tmp_path / "plain"
    (plain / "scratch").mkdir(parents=True)
    for p in (pairs / "images" / "scratch").iterdir():
        (plain / "scratch" / p.name).write_bytes(p.read_bytes())
    for fmt in ("yolo", "yolo-seg", "coco", "mvtec"):
        rc, cap = _cli([plain, "--format", fmt, "--out", tmp_path / "o"], capsys)
        assert rc == 2 and "have no mask" in cap.err and f"--format {fmt}" in cap.err and len(cap.err.strip().splitlines()) == 1
    assert _left(tmp_path) == ["plain"]
    rc, cap = _cli([plain, "--format", "imagefolder", "--out", tmp_path / "o"], capsys)  # no masks needed
    assert rc == 0 and sorted(p.name for p in (tmp_path / "o" / "train").iterdir()) == ["scratch"]


def test_unknown_class_and_bad_split(tmp_path, pairs, capsys):
    rc, cap = _cli([pairs, "--format", "yolo", "--out", tmp_path / "o", "--classes", "scratch,crack,patch"], capsys)
    assert rc == 2 and "class 'inclusion'" in cap.err and "--classes" in cap.err and len(cap.err.strip().splitlines()) == 1
    rc, cap = _cli([pairs, "--format", "yolo", "--out", tmp_path / "o", "--split", "train=0.8,holdout=0.2"], capsys)
    assert rc == 2 and "--split" in cap.err
    assert _left(tmp_path) == []
    rc, cap = _cli([pairs, "--format", "yolo", "--out", tmp_path / "o", "--classes", "patch,scratch,crack,inclusion"], capsys)
    assert rc == 0 and "0: patch" in (tmp_path / "o" / "data.yaml").read_text()


def test_non_empty_out_needs_overwrite_and_is_replaced_only_when_complete(tmp_path, pairs, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, cap = _cli([pairs, "--format", "coco", "--out", out], capsys)
    assert rc == 2 and "--overwrite" in cap.err and _left(out) == ["keep.txt"]
    rc, cap = _cli([pairs, "--format", "coco", "--out", pairs], capsys)
    assert rc == 2 and "holds the source" in cap.err

    calls = []

    def dies(self, item, *a):  # a crash half-way through the export
        calls.append(item)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_add(self, item, *a)

    real_add = export_run.CocoLayout.add
    monkeypatch.setattr(export_run.CocoLayout, "add", dies)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(pairs, "coco", out, overwrite=True)
    assert _left(tmp_path) == ["out"] and _left(out) == ["keep.txt"]  # no temporary folder, old export intact
    monkeypatch.undo()
    rc, cap = _cli([pairs, "--format", "coco", "--out", out, "--overwrite"], capsys)
    assert rc == 0 and "keep.txt" not in _left(out) and (out / "annotations" / "instances_train.json").is_file()
    assert _left(tmp_path) == ["out"]


def test_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    src = synth_source(tmp_path / "s")
    real_import = builtins.__import__

    def no_skimage(name, *a, **k):
        if name.startswith("skimage"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    monkeypatch.setattr("importlib.import_module", lambda name, *a: no_skimage(name))
    with pytest.raises(UserError, match=r"difforge\[export\]"):
        export_dataset(src, "yolo-seg", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_split_parsing_counts_and_assignment():
    assert parse_split("train=8,val=2") == {"train": 0.8, "val": 0.2}
    assert parse_split("train=1,val=0") == {"train": 1.0}
    assert counts(7, {"train": 0.8, "val": 0.2}) == {"train": 6, "val": 1}  # 5.6 + 1.4: the larger remainder
    assert counts(10, {"train": 1 / 3, "val": 1 / 3, "test": 1 / 3}) == {"train": 4, "val": 3, "test": 3}
    groups = ["real/a"] * 10 + ["synthetic/a"] * 5
    got = assign(groups, {"train": 0.8, "val": 0.2}, seed=0)
    assert got == assign(groups, {"train": 0.8, "val": 0.2}, seed=0)
    assert got[:10].count("val") == 2 and got[10:].count("val") == 1  # stratified per group
    assert any(assign(groups, {"train": 0.8, "val": 0.2}, seed=s) != got for s in range(1, 5))


def test_export_and_export_onnx_are_two_commands(capsys):
    for cmd, words in (("export", "--format"), ("export-onnx", "ONNX")):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and words in capsys.readouterr().out
