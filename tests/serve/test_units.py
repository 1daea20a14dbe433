"""Model names, exposure checks, settings and the job store: no model, no server."""

import time

import pytest

from difforge.errors import ConfigError, UserError
from difforge.serve.app import ServeSettings
from difforge.serve.jobs import GenerateArgs, Job, JobStore
from difforge.serve.models import find_model_files, is_model_name, model_names
from difforge.serve.server import bind, check_exposure, is_loopback


def test_model_names_are_stems_made_unique(tmp_path):
    assert model_names([tmp_path / "a.safetensors", tmp_path / "b.safetensors"]) == ["a", "b"]
    paths = [tmp_path / "runs" / r / "checkpoints" / "ema.safetensors" for r in ("x", "y")]
    assert model_names(paths) == ["x-ema", "y-ema"]
    assert model_names([tmp_path / "m m!.safetensors"]) == ["m_m"]
    assert model_names([tmp_path / "a.safetensors"] * 2) == ["a", "a-2"]
    assert all(is_model_name(n) for n in model_names(paths))


@pytest.mark.parametrize("name, ok", [("ema", True), ("x-ema.v2_1", True), ("../x", False), ("/etc/passwd", False),
                                      ("a/b", False), ("a\\b", False), ("..", False), ("a..b", False), ("", False), (".hidden", False)])
def test_is_model_name(name, ok):
    assert is_model_name(name) is ok


def test_find_model_files_errors(tmp_path):
    with pytest.raises(UserError, match="at least one model"):
        find_model_files([])
    with pytest.raises(UserError, match="does not exist"):
        find_model_files([tmp_path / "nope.safetensors"])
    with pytest.raises(UserError, match="no .safetensors"):
        find_model_files([], models_dir=str(tmp_path))


def test_models_dir_skips_training_state(tiny_model):
    from pathlib import Path

    found = find_model_files([], models_dir=str(Path(tiny_model).parent))
    assert Path(tiny_model) in found and all(p.name != "state.safetensors" for p in found)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_needs_nothing(host):
    assert is_loopback(host)
    check_exposure(host, None, False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_open_host_needs_token_or_insecure(host):
    assert not is_loopback(host)
    with pytest.raises(UserError, match="--token"):
        check_exposure(host, None, False)
    check_exposure(host, "t", False)
    check_exposure(host, None, True)


def test_bind_free_port_on_loopback():
    sock = bind("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        with pytest.raises(UserError, match="cannot listen"):
            bind("127.0.0.1", port)
    finally:
        sock.close()


@pytest.mark.parametrize("field", ["max_num", "max_steps", "queue", "keep_jobs"])
def test_settings_validated(field):
    with pytest.raises(ConfigError, match=field):
        ServeSettings(**{field: 0})
    with pytest.raises(ConfigError, match="token"):
        ServeSettings(token=" ")


def _job(finished_ago=None):
    j = Job("m", GenerateArgs(num=1, class_label=None, sampler="ddim", steps=1, cfg=1.0, eta=None, seed=0, total=1))
    if finished_ago is not None:
        j.succeed([], None, [])
        j.finished = time.time() - finished_ago
    return j


def test_job_store_keeps_few_recent_finished_jobs():
    store = JobStore(keep=2, ttl=60)
    old, mid, new, running = _job(30), _job(20), _job(10), _job()
    for j in (old, mid, new, running):
        store.add(j)
    assert store.get(old.id) is None and store.get(mid.id) is mid and store.get(new.id) is new
    assert store.get(running.id) is running  # unfinished jobs are never dropped (the queues bound them)
    store = JobStore(keep=10, ttl=5)
    stale, fresh = _job(6), _job(1)
    store.add(stale)
    store.add(fresh)
    assert store.get(stale.id) is None and store.get(fresh.id) is fresh and len(store) == 1


def test_missing_fastapi_is_a_user_error(monkeypatch):
    import sys

    from difforge.serve.app import require_serve_extra

    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(UserError, match=r"pip install 'difforge\[serve\]'"):
        require_serve_extra()


def test_runner_429_names_its_queue():
    """A full one-at-a-time runner answers 429 naming what it runs (the upscale route's is not 'inpainting')."""
    import asyncio

    from difforge.serve.errors import ApiError
    from difforge.serve.inpaint import Runner

    async def scenario():
        runner = Runner(0, "upscaling")
        await runner.lock.acquire()  # a request is running, none may wait
        try:
            await runner.run(lambda: None)
        except ApiError as e:
            return e
        finally:
            runner.lock.release()

    err = asyncio.run(scenario())
    assert err is not None and err.status == 429 and err.message.startswith("the upscaling queue is full")
