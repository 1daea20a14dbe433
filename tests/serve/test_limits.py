"""The token before the body, a bounded body (413), the API reference behind the token, bad model files skipped."""

import socket
import time

import pytest

from .conftest import SMALL, ServeProcess

AUTH = {"Authorization": "Bearer s3cret"}


def test_token_guards_v1_docs_and_openapi_not_the_page(make_client):
    c = make_client(token="s3cret")
    for path in ("/v1/health", "/v1/models", "/openapi.json", "/docs", "/redoc", "/v1/jobs/abc"):
        res = c.get(path)
        assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer", path
        assert res.json() == {"detail": "a valid token is needed: send the header Authorization: Bearer TOKEN", "field": None}
        assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/openapi.json", headers=AUTH).status_code == 200
    assert c.get("/docs", headers=AUTH).status_code == 200
    assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
    assert c.post("/v1/generate", json=SMALL, headers=AUTH).status_code == 200


def test_body_over_the_limit_is_413(make_client):
    c = make_client(max_body_bytes=1000)
    res = c.post("/v1/generate", content=b"{" + b" " * 2000 + b"}", headers={"Content-Type": "application/json"})
    assert res.status_code == 413 and res.json()["field"] == "body" and "1,000 bytes" in res.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(10):
            yield b" " * 500

    res = c.post("/v1/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert res.status_code == 413 and "limit of 1,000 bytes" in res.json()["detail"]
    assert c.post("/v1/generate", json=SMALL).status_code == 200  # a small request still passes
    bad = c.post("/v1/generate", content=b"x", headers={"Content-Length": "nope"})
    assert bad.status_code in (400, 413)


def test_upload_paths_get_the_larger_limit():
    from difforge.serve.limits import Guard

    g = Guard(None, None, max_body_bytes=10, max_upload_bytes=100, upload_paths=("/v1/uploads",))
    assert g.limit_for("/v1/generate") == 10 and g.limit_for("/v1/uploads/x") == 100


def test_settings_check_the_limits():
    from difforge.errors import ConfigError
    from difforge.serve import ServeSettings

    with pytest.raises(ConfigError, match="max_body_bytes"):
        ServeSettings(max_body_bytes=0)


def _raw_post(url, headers, body_size, read_timeout=10.0):
    """Send headers and up to ``body_size`` bytes, stop at the first answer: (status line, seconds, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=read_timeout) as s:
        head = f"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {body_size}\r\n"
        s.sendall((head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        s.setblocking(False)
        sent, chunk, answer = 0, b" " * (1 << 20), b""
        while sent < body_size and not answer:
            try:
                sent += s.send(chunk[: body_size - sent])
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer = s.recv(4096)
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
        s.setblocking(True)
        while b"\r\n" not in answer:
            more = s.recv(4096)
            if not more:
                break
            answer += more
    return answer.split(b"\r\n", 1)[0].decode(), time.monotonic() - t0, sent


def test_real_server_answers_big_bodies_unread(tmp_path, tiny_model):
    server = ServeProcess(tmp_path, tiny_model, "--token", "s3cret", "--device", "cpu")
    try:
        import httpx

        with httpx.Client(base_url=server.url, timeout=60) as c:  # warm up: the first request loads what it needs
            assert c.get("/v1/health", headers=AUTH).status_code == 200
        rss0 = server.rss_mb()
        size = 200 << 20
        for headers, status in (({}, "401"), ({"Authorization": "Bearer wrong"}, "401"), (AUTH, "413")):
            line, seconds, sent = _raw_post(server.url, headers, size)
            assert line.startswith(f"HTTP/1.1 {status}"), (headers, line)
            assert seconds < 5 and sent < size // 4, (seconds, sent)  # answered before the body was read
        rss1 = server.rss_mb()
        with httpx.Client(base_url=server.url, timeout=60) as c:
            big = c.post("/v1/generate", content=b" " * (8 << 20), headers={**AUTH, "Content-Type": "application/json"})
            assert big.status_code == 413 and big.json()["field"] == "body"
            assert c.post("/v1/generate", json={**SMALL, "num": 1}, headers=AUTH).status_code == 200  # still serving
    finally:
        server.close()
    assert rss1 < rss0 + 50, (rss0, rss1)  # the 600 MB sent were never held
    log = server.log.read_text()
    assert "Traceback" not in log and "POST /v1/generate 413" in log and "POST /v1/generate 401" in log


def test_models_dir_skips_bad_files_with_a_warning(tmp_path, tiny_model):
    import shutil

    from difforge.errors import UserError
    from difforge.serve.models import load_models

    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(tiny_model, d / "good.safetensors")
    (d / "junk.safetensors").write_bytes(b"not a model")
    data = (d / "good.safetensors").read_bytes()
    (d / "cut.safetensors").write_bytes(data[: len(data) // 2])
    warnings = []
    models = load_models([], str(d), device="cpu", precision="fp32", warn=warnings.append)
    assert list(models) == ["good"]
    assert len(warnings) == 2 and all(w.startswith("warning: skipping ") and "\n" not in w for w in warnings), warnings
    assert any("junk.safetensors" in w for w in warnings) and any("cut.safetensors" in w for w in warnings)
    server = ServeProcess(tmp_path, "--models-dir", d, "--device", "cpu")  # the real command starts and serves the rest
    try:
        import httpx

        assert [m["name"] for m in httpx.get(server.url + "/v1/models", timeout=30).json()["models"]] == ["good"]
    finally:
        server.close()
    log = server.log.read_text()
    assert "warning: skipping" in log and "junk.safetensors" in log and "Traceback" not in log
    with pytest.raises(UserError, match="junk.safetensors"):  # a file named on the command line must load
        load_models([str(d / "junk.safetensors")], device="cpu", warn=warnings.append)
    (d / "good.safetensors").unlink()
    with pytest.raises(UserError, match="none of its 2"):
        load_models([], str(d), device="cpu", warn=warnings.append)


def test_nan_model_answers_500_in_one_line_without_paths(make_client, tmp_path, tiny_model):
    import json

    import torch
    from safetensors.torch import save_file

    from difforge.modelfile import load_model_file
    from difforge.pipeline import Pipeline

    tensors, meta = load_model_file(tiny_model)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    path = tmp_path / "nan.safetensors"
    save_file(tensors, str(path), metadata={"difforge": json.dumps(meta)})
    c = make_client(models={"nan": Pipeline.from_checkpoint(path, device="cpu", precision="fp32", check_weights=False)})
    res = c.post("/v1/generate", json=SMALL)
    assert res.status_code == 500 and "NaN/Inf" in res.json()["detail"] and str(tmp_path) not in res.text, res.text
    assert "\n" not in res.json()["detail"]
