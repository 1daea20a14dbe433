"""Shared pieces of the serve tests: the tiny model loaded once, a TestClient factory, a live server."""

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
with warnings.catch_warnings():  # starlette asks for httpx2 for its TestClient; httpx still works
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    import fastapi.testclient  # noqa: F401  (imported once here, so later imports stay quiet)

SMALL = {"num": 2, "steps": 2, "seed": 0}  # a request that runs in well under a second


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks gain nothing from a second thread, and on a shared machine it spins (10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model):
    from difforge.pipeline import Pipeline

    return Pipeline.from_checkpoint(tiny_model, device="cpu", precision="fp32")


@pytest.fixture
def make_client(tiny_pipe):
    """make_client(**settings) -> a started TestClient serving the tiny model as 'tiny'; closed at the end."""
    from fastapi.testclient import TestClient

    from difforge.serve import ServeSettings, create_app

    stack = contextlib.ExitStack()

    def make(models=None, **settings):
        app = create_app(models or {"tiny": tiny_pipe}, ServeSettings(**settings))
        return stack.enter_context(TestClient(app))

    with stack:
        yield make


@contextlib.contextmanager
def live_server(app, timeout=30.0):
    """Run ``app`` under a real uvicorn on 127.0.0.1 (a free port) in a thread; yield its URL; stop it."""
    import uvicorn

    from difforge.serve.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class ServeProcess:
    """`difforge serve` in a subprocess on 127.0.0.1 and a free port; its log goes to a file."""

    def __init__(self, tmp_path, *args, timeout=90.0):
        self.log = tmp_path / "serve.log"
        self._log = open(self.log, "wb")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "difforge", "serve", *map(str, args), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self._log, env=env)
        deadline = time.monotonic() + timeout
        line = b""
        while b"\n" not in line:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.close()
                pytest.fail(f"difforge serve did not start: {self.log.read_text()[-2000:]}")
            if select.select([self.proc.stdout], [], [], min(left, 1.0))[0]:
                line += os.read(self.proc.stdout.fileno(), 4096)
        m = re.search(rb"http://127\.0\.0\.1:\d+", line)
        assert m, line
        self.url = m.group(0).decode()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
        return kb / 1024

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self._log.close()
