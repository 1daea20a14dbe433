"""A real `difforge serve` process on 127.0.0.1: token, request log, and a bounded burst of 20."""

from concurrent.futures import ThreadPoolExecutor

from .conftest import ServeProcess

BURST = 20
AUTH = {"Authorization": "Bearer s3cret"}


def test_real_server_token_log_and_burst(tmp_path, tiny_model):
    import httpx

    server = ServeProcess(tmp_path, tiny_model, "--token", "s3cret", "--queue", "2", "--max-num", "4", "--device", "cpu")
    try:
        limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
        with httpx.Client(base_url=server.url, timeout=60, limits=limits) as c:
            assert c.get("/v1/health").status_code == 401
            models = c.get("/v1/models", headers=AUTH).json()
            assert [m["name"] for m in models["models"]] == ["ema"] and models["limits"] == {"max_num": 4, "max_steps": 1000, "queue": 2}
            req = {"num": 1, "steps": 2, "class": "crack", "sampler": "ddim"}
            res = c.post("/v1/generate", json=req, headers=AUTH)  # also the warm-up
            assert res.status_code == 200 and len(res.json()["images"]) == 1
            rss0 = server.rss_mb()

            def one(i):
                try:
                    return c.post("/v1/generate", json={**req, "seed": i}, headers=AUTH).status_code
                except httpx.HTTPError as e:
                    return repr(e)

            for _ in range(2):  # two bursts: memory must not grow with every burst
                with ThreadPoolExecutor(BURST) as pool:
                    codes = list(pool.map(one, range(BURST)))
                assert set(codes) <= {200, 429}, codes
                assert codes.count(200) >= 3, codes  # one running + 2 queued are always accepted
            rss1 = server.rss_mb()
            health = c.get("/v1/health", headers=AUTH).json()
            assert health["status"] == "ok" and health["models"]["ema"]["waiting"] == 0
            assert c.post("/v1/generate", json=req, headers=AUTH).status_code == 200  # still serving
    finally:
        server.close()
    assert server.proc.returncode is not None
    assert rss1 < rss0 + 150, (rss0, rss1)
    log = server.log.read_text()
    assert "Traceback" not in log
    assert "POST /v1/generate model=ema 200" in log and "GET /v1/health 401" in log
    assert "s3cret" not in log and "iVBOR" not in log  # neither the token nor image data is logged
