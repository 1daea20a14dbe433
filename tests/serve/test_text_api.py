"""/v1/generate with a prompt: a text model answers, the model list says it takes text, the page
has the (hidden unless text) prompt box; a model without text refuses a prompt in one line."""

from tests.models.test_text_cond import _text_pipeline

from .conftest import SMALL


def test_prompt_through_the_api(make_client, tiny_pipe):
    pipe, _ = _text_pipeline()
    c = make_client(models={"txt": pipe, "tiny": tiny_pipe})
    models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
    assert models["txt"]["text"] is True and models["tiny"]["text"] is False
    res = c.post("/v1/generate", json={**SMALL, "model": "txt", "prompt": "a large scratch", "negative_prompt": "a small crack"})
    assert res.status_code == 200, res.text
    assert len(res.json()["images"]) == 2
    composed = c.post("/v1/generate", json={**SMALL, "model": "txt", "prompt": "a large scratch AND a small crack on wood :0.5"})
    assert composed.status_code == 200 and len(composed.json()["images"]) == 2, composed.text
    empty_part = c.post("/v1/generate", json={**SMALL, "model": "txt", "prompt": "a large scratch AND :2"})
    assert empty_part.status_code == 422 and "empty part" in empty_part.text
    bad = c.post("/v1/generate", json={**SMALL, "model": "txt", "prompt": "a purple scratch"})
    assert bad.status_code == 422 and "purple" in bad.text
    no_text = c.post("/v1/generate", json={**SMALL, "model": "tiny", "prompt": "a scratch"})
    assert no_text.status_code == 422 and "no text encoder" in no_text.text
    page = c.get("/").text
    assert 'id="prompt-row" hidden' in page and "prompt-row" in c.get("/static/app.js").text


def test_place_contrast_through_the_api(make_client, tiny_pipe):
    from tests.pipeline.test_places import CAPTIONS

    pipe, _ = _text_pipeline(captions=CAPTIONS)
    c = make_client(models={"txt": pipe, "tiny": tiny_pipe})
    body = {**SMALL, "model": "txt", "prompt": "a scratch at the top left on wood", "seed": 3}
    images = {a: c.post("/v1/generate", json={**body, "place_contrast": a}).json()["images"] for a in (0.0, 2.0)}
    assert len(images[2.0]) == 2 and images[0.0] != images[2.0]  # the contrast changes what is drawn
    assert c.post("/v1/generate", json={**body, "place_contrast": None}).status_code == 200  # null: the default
    negative = c.post("/v1/generate", json={**body, "place_contrast": -1})
    assert negative.status_code == 422 and "place_contrast" in negative.text
    no_text = c.post("/v1/generate", json={**SMALL, "model": "tiny", "place_contrast": 1.0})
    assert no_text.status_code == 422 and "no text encoder" in no_text.text


def test_analogy_through_the_api(make_client, tiny_pipe):
    from difforge.pipeline.places import caption_templates
    from tests.pipeline.test_analogy import SHORT

    pipe, _ = _text_pipeline(captions=SHORT)
    pipe.meta["text"]["templates"] = caption_templates(SHORT)
    c = make_client(models={"txt": pipe, "tiny": tiny_pipe})
    body = {**SMALL, "model": "txt", "prompt": "crack at the top on wood", "seed": 3}
    images = {s: c.post("/v1/generate", json={**body, "analogy": s}).json()["images"] for s in (0.0, 1.0)}
    assert len(images[1.0]) == 2 and images[0.0] != images[1.0]  # an unseen combination: the analogy changes what is drawn
    assert c.post("/v1/generate", json={**body, "analogy": None}).status_code == 200  # null: the default
    too_much = c.post("/v1/generate", json={**body, "analogy": 1.5})
    assert too_much.status_code == 422 and "analogy" in too_much.text
    no_text = c.post("/v1/generate", json={**SMALL, "model": "tiny", "analogy": 1.0})
    assert no_text.status_code == 422 and "no text encoder" in no_text.text
