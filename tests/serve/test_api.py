"""The HTTP API through FastAPI's TestClient on the tiny model: every endpoint and every refusal."""

import base64
import io
import logging
import threading
import time
import zipfile

import pytest
from PIL import Image

from difforge.pipeline.config import SampleConfig

from .conftest import SMALL


def _wait_job(client, job_id, states=("done", "failed"), timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def _one_line(res, status, field):
    assert res.status_code == status, res.text
    body = res.json()
    assert body["field"] == field, body
    assert body["detail"].startswith(f"{field}: ") and "\n" not in body["detail"], body
    return body["detail"]


def test_health_and_models(make_client):
    c = make_client(max_num=8, max_steps=30, queue=3)
    c_small = make_client(max_num=8, max_steps=12, queue=3)
    small = c_small.get("/v1/models").json()["models"][0]["defaults"]
    assert small["steps"] == 12  # defaults clipped to the limits
    h = c.get("/v1/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    assert h.json()["models"] == {"tiny": {"waiting": 0, "running": False}}
    body = c.get("/v1/models").json()
    assert body["limits"] == {"max_num": 8, "max_steps": 30, "queue": 3} and body["auth"] is False
    (m,) = body["models"]
    assert m["name"] == "tiny" and m["image_size"] == 16 and m["channels"] == 3
    assert m["classes"] == ["scratch", "inclusion", "crack", "patch"] and m["conditional"]
    assert "ddim" in m["samplers"] and "dpm++2m" in m["samplers"]
    assert m["defaults"]["steps"] == SampleConfig().steps and m["defaults"]["sampler"] == SampleConfig().sampler
    assert m["defaults"]["cfg_interval"] == [0.1, 3.0]  # a class model's (pipeline/config.py CFG_INTERVAL)
    assert "file" not in m  # the server's paths are not the client's business


def test_generate_png_base64(make_client):
    c = make_client()
    res = c.post("/v1/generate", json={**SMALL, "class": "crack"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"] == "tiny" and len(body["images"]) == 2
    for i, im in enumerate(body["images"]):
        assert (im["index"], im["seed"], im["class_name"], im["class_index"]) == (i, i, "crack", 2)
        pic = Image.open(io.BytesIO(base64.b64decode(im["png_base64"])))
        assert pic.format == "PNG" and pic.size == (16, 16) and pic.mode == "RGB"


def test_class_all_index_and_default(make_client):
    c = make_client()
    body = c.post("/v1/generate", json={**SMALL, "num": 1, "class": "all"}).json()
    assert [im["class_name"] for im in body["images"]] == ["scratch", "inclusion", "crack", "patch"]
    assert [im["class_name"] for im in c.post("/v1/generate", json={**SMALL, "class": 3}).json()["images"]] == ["patch"] * 2
    assert [im["class_name"] for im in c.post("/v1/generate", json={**SMALL, "class": None}).json()["images"]] == ["scratch", "inclusion"]


def test_seed_determinism_and_zip(make_client):
    c = make_client()
    req = {**SMALL, "seed": 7, "class": "scratch", "sampler": "dpm++2m"}
    a = [im["png_base64"] for im in c.post("/v1/generate", json=req).json()["images"]]
    b = [im["png_base64"] for im in c.post("/v1/generate", json=req).json()["images"]]
    assert a == b
    assert a[0] != a[1]  # image i uses seed + i
    other = [im["png_base64"] for im in c.post("/v1/generate", json={**req, "seed": 8}).json()["images"]]
    assert other[0] == a[1]  # seed 8 is image 1 of seed 7, whatever the batch
    res = c.post("/v1/generate", json={**req, "format": "zip"})
    assert res.status_code == 200 and res.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(res.content)) as z:
        names = z.namelist()
        assert names == ["0000_scratch_seed7.png", "0001_scratch_seed8.png"]
        assert [base64.b64encode(z.read(n)).decode() for n in names] == a


@pytest.mark.parametrize(
    "body, field",
    [
        ({"num": 0}, "num"),
        ({"num": 9}, "num"),
        ({"num": 3, "class": "all"}, "num"),  # 3 x 4 classes > 8
        ({"num": "2"}, "num"),
        ({"steps": 31}, "steps"),
        ({"steps": 0}, "steps"),
        ({"sampler": "euler_a"}, "sampler"),
        ({"class": "dog"}, "class"),
        ({"class": 4}, "class"),
        ({"class": [1]}, "class"),
        ({"format": "gif"}, "format"),
        ({"cfg": "abc"}, "cfg"),
        ({"cfg": -1}, "cfg"),
        ({"eta": 2.0}, "eta"),
        ({"eta": 0.5, "sampler": "euler"}, "eta"),  # euler has no eta
        ({"seed": -1}, "seed"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_values_name_the_field(make_client, body, field):
    c = make_client(max_num=8, max_steps=30)
    detail = _one_line(c.post("/v1/generate", json={**SMALL, **body}), 422, field)
    _one_line(c.post("/v1/jobs", json={**SMALL, **body}), 422, field)
    if field == "sampler":
        assert "ddim" in detail  # the allowed values are listed
    if field == "class":
        assert "scratch" in detail or "null" in detail


def test_every_listed_sampler_runs(make_client):
    c = make_client()
    for sampler in c.get("/v1/models").json()["models"][0]["samplers"]:
        res = c.post("/v1/generate", json={"num": 1, "steps": 2, "sampler": sampler})
        assert res.status_code == 200 and len(res.json()["images"]) == 1, (sampler, res.text)


def test_non_finite_and_broken_json(make_client):
    c = make_client()
    hdr = {"content-type": "application/json"}
    assert "finite" in _one_line(c.post("/v1/generate", content=b'{"cfg": NaN}', headers=hdr), 422, "cfg")
    _one_line(c.post("/v1/generate", content=b'{"num": 2', headers=hdr), 422, "body")


def test_unknown_and_path_like_models(make_client, tiny_pipe):
    c = make_client()
    assert "tiny" in _one_line(c.post("/v1/generate", json={**SMALL, "model": "nope"}), 404, "model")
    for name in ("../x", "/etc/passwd", "a/b", "..", "a\\b", "~/m.safetensors", "", "x" * 300):
        res = c.post("/v1/generate", json={**SMALL, "model": name})
        assert 400 <= res.status_code < 500 and res.json()["field"] == "model", (name, res.text)
    two = make_client(models={"a": tiny_pipe, "b": tiny_pipe})
    assert "a, b" in _one_line(two.post("/v1/generate", json=SMALL), 422, "model")  # no default when there are two
    assert two.post("/v1/generate", json={**SMALL, "model": "b"}).status_code == 200


def test_token(make_client):
    c = make_client(token="s3cret")
    for path in ("/v1/health", "/v1/models"):
        assert c.get(path).status_code == 401
        assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get(path, headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert c.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    res = c.post("/v1/generate", json=SMALL)
    assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
    assert c.post("/v1/jobs", json=SMALL).status_code == 401
    assert c.get("/v1/jobs/0123").status_code == 401
    assert c.post("/v1/generate", json=SMALL, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).json()["auth"] is True
    assert c.get("/").status_code == 200  # the page itself holds nothing; it asks for the token


def test_jobs_progress_and_zip(make_client):
    c = make_client()
    res = c.post("/v1/jobs", json={**SMALL, "num": 3, "steps": 3, "class": "patch"})
    assert res.status_code == 202, res.text
    job = res.json()
    assert job["state"] in ("queued", "running", "done") and job["images"] is None
    seen = set()
    deadline = time.monotonic() + 60
    while job["state"] not in ("done", "failed") and time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job['id']}").json()
        seen.add(job["progress"])
        assert 0.0 <= job["progress"] <= 1.0
        time.sleep(0.005)
    assert job["state"] == "done" and job["progress"] == 1.0 and job["seconds"] > 0
    assert len(job["images"]) == 3 and job["settings"]["class"] == "patch"
    z = c.get(job["zip_url"])
    assert z.status_code == 200 and len(zipfile.ZipFile(io.BytesIO(z.content)).namelist()) == 3
    assert _one_line(c.get("/v1/jobs/ffff"), 404, "id")


def test_progress_reaches_every_step():
    from difforge.serve.jobs import GenerateArgs, Job

    job = Job("tiny", GenerateArgs(num=4, class_label=None, sampler="ddim", steps=2, cfg=1.0, eta=None, seed=0, total=4))
    seen = []
    for done in (0, 2):
        for step in (0, 1):
            job.on_progress(done, 4, step, 2, batch_size=2)
            seen.append(job.progress)
    assert seen == [0.25, 0.5, 0.75, 1.0]


def test_full_queue_answers_429_at_once(make_client, tiny_model):
    from difforge.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(tiny_model, device="cpu", precision="fp32")
    gate = threading.Event()
    real = pipe.generate

    def blocked(*args, **kw):
        gate.wait(30)
        return real(*args, **kw)

    pipe.generate = blocked
    c = make_client(models={"tiny": pipe}, queue=1)
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(c.post("/v1/generate", json=SMALL)))
    try:
        waiting.start()  # a synchronous request whose generation cannot finish yet
        deadline = time.monotonic() + 10
        while c.get("/v1/health").json()["models"]["tiny"]["running"] is False and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        assert c.get("/v1/health").json()["models"]["tiny"] == {"waiting": 0, "running": True}
        assert time.monotonic() - t0 < 2  # the event loop answers while a generation runs
        second = c.post("/v1/jobs", json=SMALL)
        assert second.status_code == 202
        assert c.get("/v1/health").json()["models"]["tiny"] == {"waiting": 1, "running": True}
        t0 = time.monotonic()
        for path in ("/v1/jobs", "/v1/generate"):
            res = c.post(path, json=SMALL)
            assert res.status_code == 429, res.text
            assert "waiting" in res.json()["detail"] and res.headers["retry-after"] == "1"
        assert time.monotonic() - t0 < 5  # refused at once, not after the running job
    finally:
        gate.set()
        waiting.join(60)
    assert answers and answers[0].status_code == 200 and len(answers[0].json()["images"]) == 2
    assert _wait_job(c, second.json()["id"])["state"] == "done"
    assert c.post("/v1/generate", json=SMALL).status_code == 200  # room again


def test_generation_error_is_reported_not_fatal(make_client, tiny_model):
    from difforge.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(tiny_model, device="cpu", precision="fp32")

    def broken(*args, **kw):
        raise RuntimeError("boom")

    pipe.generate = broken
    c = make_client(models={"tiny": pipe})
    res = c.post("/v1/generate", json=SMALL)
    assert res.status_code == 500 and "RuntimeError" in res.json()["detail"]
    job = _wait_job(c, c.post("/v1/jobs", json=SMALL).json()["id"])
    assert job["state"] == "failed" and "RuntimeError" in job["error"]
    assert _one_line(c.get(f"/v1/jobs/{job['id']}/zip"), 409, "id")
    assert c.get("/v1/health").status_code == 200


def test_request_log_names_model_and_status_not_images(make_client):
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    log = logging.getLogger("difforge.serve")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        c = make_client()
        c.post("/v1/generate", json=SMALL)
        c.post("/v1/generate", json={**SMALL, "model": "zz"})
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    assert any(m.startswith("POST /v1/generate model=tiny 200 ") and m.endswith(" ms") for m in records), records
    assert any(m.startswith("POST /v1/generate model=zz 404 ") for m in records), records
    assert all(len(m) < 300 and "iVBOR" not in m for m in records)


def test_page_static_and_docs(make_client):
    c = make_client()
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="generate"' in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace('href="/docs"', "")  # nothing from outside
    js = c.get("/static/app.js")
    assert js.status_code == 200 and "/v1/jobs" in js.text
    assert c.get("/static/app.css").status_code == 200
    spec = c.get("/openapi.json").json()
    assert {"/v1/models", "/v1/generate", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/health"} <= set(spec["paths"])
    fields = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    assert {"model", "class", "num", "sampler", "steps", "cfg", "eta", "seed", "format", "prompt", "negative_prompt", "place_contrast", "analogy"} == set(fields)
    assert fields["num"]["maximum"] == 64 and fields["steps"]["maximum"] == 1000  # the server's own limits
    assert c.get("/docs").status_code == 200
