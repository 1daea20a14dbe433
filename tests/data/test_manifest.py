"""The manifest schema: lines round-trip, bad lines get one-line errors naming file:line, resuming skips."""

import json

import pytest

from difforge.data.manifest import KEYS, ManifestWriter, make_line, read_manifest, validate_line
from difforge.errors import DataError


def _line(i=0, **kw):
    return make_line(f"images/{i:05d}.png", mask=f"masks/{i:05d}.png", size=(16, 16), seed=i, method="blend",
                     class_name="scratch", model="m.safetensors", model_sha256="ab" * 32, sampler="ddim", steps=10,
                     cfg=0.0, background="good/a.png", placement={"dy": 1}, seconds=0.5, **kw)


def test_roundtrip_and_resume(tmp_path):
    w = ManifestWriter(tmp_path)
    w.add(_line(0))
    w.add(_line(1, extra_key=3))
    w.add(_line(1))  # already listed: ignored
    lines = read_manifest(tmp_path)
    assert [ln["seed"] for ln in lines] == [0, 1] and lines[1]["extra_key"] == 3
    assert set(KEYS) <= set(lines[0]) and lines[0]["class"] == "scratch"
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write('{"image": "images/000')  # a run killed mid-line
    assert len(read_manifest(tmp_path)) == 2
    w2 = ManifestWriter(tmp_path)
    assert set(w2.done) == {"images/00000.png", "images/00001.png"}
    w2.add(_line(2))
    assert [ln["seed"] for ln in read_manifest(tmp_path)] == [0, 1, 2]


@pytest.mark.parametrize("key,value,needle", [("method", "paint", "method"), ("size", [16], "size"),
                                              ("seed", -1, "seed"), ("image", "/abs.png", "image"),
                                              ("cfg", float("nan"), "cfg"), ("source", "fake", "source")])
def test_bad_values_named(key, value, needle):
    line = dict(_line())
    line[key] = value
    with pytest.raises(DataError, match=needle):
        validate_line(line, "x.jsonl:3")


def test_bad_file_names_line(tmp_path):
    (tmp_path / "manifest.jsonl").write_text(json.dumps(_line()) + "\n" + "{oops\n" + json.dumps(_line(1)) + "\n")
    with pytest.raises(DataError, match=r"manifest.jsonl:2"):
        read_manifest(tmp_path)
    line = dict(_line())
    del line["time"]
    (tmp_path / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(DataError, match="lacks key"):
        read_manifest(tmp_path)
