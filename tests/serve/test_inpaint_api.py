"""POST /v1/inpaint: known pixels kept, the mask returned, bounds and bad uploads answered in one line."""

import base64
import io

import numpy as np
from PIL import Image


def _b64(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _pair(size=16):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[4:9, 3:11] = 255
    return image, mask


def test_inpaint_keeps_the_known_pixels(make_client):
    client = make_client()
    image, mask = _pair()
    body = {"image_base64": "data:image/png;base64," + _b64(image), "mask_base64": _b64(mask), "class": "crack",
            "method": "blend", "steps": 3, "num": 2, "seed": 4}
    r = client.post("/v1/inpaint", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["method"] == "blend" and [im["seed"] for im in out["images"]] == [4, 5]
    assert [im["class_name"] for im in out["images"]] == ["crack", "crack"]
    m = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["mask_png_base64"])))) > 127
    assert (m == (mask > 127)).all()
    for im in out["images"]:
        arr = np.asarray(Image.open(io.BytesIO(base64.b64decode(im["png_base64"]))))
        assert arr.shape == (16, 16, 3) and (arr[~m] == image[~m]).all()
    again = client.post("/v1/inpaint", json=body).json()
    assert again["images"][1]["png_base64"] == out["images"][1]["png_base64"]  # seeded


def test_bad_uploads_and_bounds(make_client):
    client = make_client(max_steps=10, max_upload_bytes=4096)
    image, mask = _pair()
    ok = {"image_base64": _b64(image), "mask_base64": _b64(mask), "steps": 2}
    cases = [
        (dict(ok, mask_base64=_b64(mask[:8])), 422, "mask_base64", "the image's size"),
        (dict(ok, mask_base64=_b64(np.full((16, 16), 128, np.uint8))), 422, "mask_base64", "not binary"),
        (dict(ok, mask_base64=_b64(np.zeros((16, 16), np.uint8))), 422, "mask_base64", "empty"),
        (dict(ok, image_base64="@@@@@@@@@@"), 422, "image_base64", "base64"),
        (dict(ok, image_base64=base64.b64encode(b"not an image at all").decode()), 422, "image_base64", "readable"),
        (dict(ok, steps=11), 422, "steps", ""),
        (dict(ok, resample=21), 422, "resample", ""),
        (dict(ok, **{"class": "nope"}), 422, "class", "unknown class"),
        (dict(ok, image_base64="A" * 6000), 413, "body", "limit"),
    ]
    for body, status, field, words in cases:
        r = client.post("/v1/inpaint", json=body)
        assert r.status_code == status and r.json()["field"] == field and words in r.json()["detail"], (field, r.text)
