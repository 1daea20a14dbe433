"""Caption sources (metadata.jsonl / .csv, sidecar .txt, template), their errors, and the
built-in set's exact captions checked against the images themselves."""

import json

import numpy as np
import pytest
from PIL import Image

from difforge.data.builtin import CLASSES
from difforge.data.builtin_captions import attributes, caption, core_mask, material_of, write_builtin_captions
from difforge.data.captions import read_captions
from difforge.errors import DataError


def _folder(tmp_path, names=("a/x1.png", "a/x2.png", "b/y1.png")):
    for n in names:
        p = tmp_path / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(p)
    return [tmp_path / n for n in names]


def test_jsonl_csv_txt_and_template_sources(tmp_path):
    paths = _folder(tmp_path)
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a/x1.png", "text": "  Rost  auf\tStahl "}, ensure_ascii=False) + "\n"
        + json.dumps({"file_name": "./a/x2.png", "text": "ひび割れ, 左上"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "b" / "y1.txt").write_text("a crack é\n", encoding="utf-8")
    caps = read_captions(tmp_path, paths, ["a", "b"], [0, 0, 1])
    assert caps == ["Rost auf Stahl", "ひび割れ, 左上", "a crack é"]

    (tmp_path / "metadata.jsonl").unlink()
    (tmp_path / "metadata.csv").write_text("file_name,text\na/x1.png,\"one, two\"\n", encoding="utf-8")
    caps = read_captions(tmp_path, paths, ["a", "b"], [0, 0, 1], template="a photo of a {class} defect")
    assert caps == ["one, two", "a photo of a a defect", "a crack é"]


def test_missing_captions_are_one_clear_error_unless_templated(tmp_path):
    paths = _folder(tmp_path)
    with pytest.raises(DataError, match=r"3 of 3 images .* have no caption .*--caption-template"):
        read_captions(tmp_path, paths, ["a", "b"], [0, 0, 1])
    assert read_captions(tmp_path, paths, ["my_cls", "b"], [0, 0, 1], template="{class}!") == ["my cls!", "my cls!", "b!"]
    with pytest.raises(DataError, match="no classes"):
        read_captions(tmp_path, paths, template="a {class}")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a/x1.png"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1 needs the fields file_name and text"):
        read_captions(tmp_path, paths, template="x")
    (tmp_path / "metadata.jsonl").write_text("not json\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1 is not valid JSON"):
        read_captions(tmp_path, paths, template="x")


def test_builtin_material_matches_the_surface_colour():
    """_render's first draw decides the surface; wood is brown (R well above B), metal grey
    (judged on the defect-free rendering, as a rust patch is brown on metal too)."""
    from difforge.data.builtin import make_image_and_mask

    for c in range(len(CLASSES) + 1):
        for i in range(6):
            _, _, clean = make_image_and_mask(c, 16, np.random.default_rng([3, c, i]))
            r, _, b = clean.reshape(-1, 3).mean(0)
            assert (material_of(3, c, i) == "wood") == (r - b > 25), (c, i, r, b)


def test_builtin_attributes_follow_the_mask():
    mask = np.zeros((30, 30), bool)
    mask[2, 0:10] = True  # a short horizontal line near the top left
    a = attributes(mask, "scratch", "metal")
    assert (a["position"], a["orientation"]) == ("top left", "horizontal")
    mask = np.zeros((30, 30), bool)
    mask[15:29, 27] = True
    assert attributes(mask, "crack", "wood")["orientation"] == "vertical"
    assert attributes(mask, "crack", "wood")["position"] == "bottom right"
    assert caption(dict(material="wood", defect="good", position="", orientation="", size="")) == "a clean wooden surface without defects"
    img = np.zeros((4, 4, 3), np.uint8)
    clean = img.copy()
    img[0, 0, 1] = 30
    img[1, 1, 2] = 10  # below the fringe threshold
    assert core_mask(img, clean).sum() == 1


def test_write_builtin_captions_names_every_file(tmp_path):
    from difforge.data.builtin import write_dataset

    write_dataset(tmp_path, size=16, per_class=2, seed=1, progress=False)
    meta = write_builtin_captions(tmp_path, 16, 2, 1)
    recs = [json.loads(l) for l in meta.read_text(encoding="utf-8").splitlines()]
    assert len(recs) == 8 and all((tmp_path / r["file_name"]).is_file() for r in recs)
    assert all(r["defect"] in r["text"] and ("wood" in r["text"]) == (r["material"] == "wood") for r in recs)
    paths = [tmp_path / r["file_name"] for r in recs]
    assert read_captions(tmp_path, paths) == [r["text"] for r in recs]


def test_three_materials_each_drawn_and_told_apart_by_colour_and_grain():
    """With metal, wood, concrete the first draw picks one of three in equal shares; wood stays
    brown, concrete is grey like metal but without metal's one brushing direction (its fine
    variation is about equal along x and y)."""
    from difforge.data.builtin import make_image_and_mask

    mats = ("metal", "wood", "concrete")
    seen = set()
    for c in range(len(CLASSES)):
        for i in range(12):
            m = material_of(5, c, i, mats)
            seen.add(m)
            _, _, clean = make_image_and_mask(c, 48, np.random.default_rng([5, c, i]), materials=mats)
            r, _, b = clean.reshape(-1, 3).mean(0)
            assert (m == "wood") == (r - b > 25), (c, i, m, r, b)
            if m == "concrete":
                g = clean.astype(np.float32).mean(-1)
                dx, dy = np.abs(np.diff(g, axis=1)).mean(), np.abs(np.diff(g, axis=0)).mean()
                assert 0.6 < dx / dy < 1.6, (c, i, dx, dy)
    assert seen == set(mats)
    assert caption(dict(material="concrete", defect="crack", position="top", orientation="", size="small")) == \
        "a small crack at the top on concrete"


def test_default_materials_keep_every_image_and_bad_ones_are_refused():
    from difforge.config import Config
    from difforge.data.builtin import check_materials, generate_arrays
    from difforge.errors import ConfigError

    a, _, _ = generate_arrays(16, 2, seed=4)
    b, _, _ = generate_arrays(16, 2, seed=4, materials=("metal", "wood"))
    assert np.array_equal(a, b)
    assert [material_of(4, 0, i) for i in range(8)] == [material_of(4, 0, i, ("metal", "wood")) for i in range(8)]
    c, _, _ = generate_arrays(16, 2, seed=4, materials=("concrete",))
    assert not np.array_equal(a, c)
    for bad in ((), ("metal", "metal"), ("glass",)):
        with pytest.raises(ValueError, match="materials must be distinct names"):
            check_materials(bad)
    with pytest.raises(ConfigError, match="builtin_materials='metal,plastic'"):
        Config().override(builtin_materials="metal,plastic").validate()
