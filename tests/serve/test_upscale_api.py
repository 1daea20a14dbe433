"""POST /v1/upscale and GET /v1/upscalers: any size out at exactly x scale, SR files kept off /v1/generate, bounds in one line."""

import base64
import io

import numpy as np
from PIL import Image

from tests.pipeline.conftest import sr_models  # noqa: F401  (the tiny SR model files)


def _b64(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _client(make_client, tiny_pipe, sr_models):  # noqa: F811
    from difforge.serve.models import load_models

    reg, diff = load_models([sr_models["regression"], sr_models["diffusion"]], device="cpu", precision="fp32").values()
    return make_client({"tiny": tiny_pipe, "reg": reg, "diff": diff}, max_steps=30)


def test_upscale_any_size(make_client, tiny_pipe, sr_models):  # noqa: F811
    c = _client(make_client, tiny_pipe, sr_models)
    ups = {u["name"]: u for u in c.get("/v1/upscalers").json()["upscalers"]}
    assert ups["reg"]["kind"] == "regression" and ups["reg"]["scale"] == 4 and ups["diff"]["scale"] == 2 and ups["diff"]["noise_aug"] == 0.5
    assert [m["name"] for m in c.get("/v1/models").json()["models"]] == ["tiny"]  # SR models are not generators
    img = np.random.RandomState(0).randint(0, 256, (11, 7, 3), dtype=np.uint8)
    r = c.post("/v1/upscale", json={"model": "reg", "image_base64": _b64(img)})
    assert r.status_code == 200, r.text
    out = Image.open(io.BytesIO(base64.b64decode(r.json()["png_base64"])))
    assert out.size == (28, 44) and (r.json()["width"], r.json()["height"]) == (28, 44)
    r = c.post("/v1/upscale", json={"model": "diff", "image_base64": _b64(img), "class": "crack", "steps": 2, "noise_level": 0.2})
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(base64.b64decode(r.json()["png_base64"]))).size == (14, 22)


def test_upscale_refusals_are_one_line(make_client, tiny_pipe, sr_models):  # noqa: F811
    c = _client(make_client, tiny_pipe, sr_models)
    big = np.zeros((600, 20, 3), np.uint8)
    for body, status, field in [({"model": "reg", "image_base64": _b64(big)}, 422, "image_base64"),
                                ({"model": "reg", "image_base64": "bm90IGFuIGltYWdl"}, 422, "image_base64"),
                                ({"model": "nope", "image_base64": _b64(big[:8])}, 404, "model"),
                                ({"image_base64": _b64(big[:8])}, 422, "model"),
                                ({"model": "reg", "image_base64": _b64(big[:8]), "noise_level": 0.3}, 422, "noise_level"),
                                ({"model": "diff", "image_base64": _b64(big[:8]), "class": "dent"}, 422, "class")]:
        r = c.post("/v1/upscale", json=body)
        assert r.status_code == status, (body.keys(), r.text)
        assert r.json()["field"] == field and "\n" not in r.json()["detail"], r.text
    r = c.post("/v1/generate", json={"model": "reg", "num": 1, "steps": 2})
    assert r.status_code == 404  # an upscaler is not a generating model


def test_a_server_of_upscalers_only_starts_and_says_so(make_client, sr_models):  # noqa: F811
    from difforge.serve.models import load_models

    reg = load_models([sr_models["regression"]], device="cpu", precision="fp32")
    c = make_client(reg)
    assert c.get("/v1/models").json()["models"] == []
    assert [u["name"] for u in c.get("/v1/upscalers").json()["upscalers"]] == list(reg)
    img = np.zeros((5, 6, 3), np.uint8)
    r = c.post("/v1/upscale", json={"image_base64": _b64(img)})  # the only upscaler by default
    assert r.status_code == 200, r.text
    r = c.post("/v1/generate", json={"num": 1, "steps": 2})
    assert r.status_code == 404 and "only upscalers" in r.json()["detail"]
    assert c.get("/").status_code == 200
