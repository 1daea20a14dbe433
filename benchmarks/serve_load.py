"""Throughput and latency of `difforge serve` on loopback, for 1 and more concurrent clients.

    python benchmarks/serve_load.py                          # trains a tiny 16 px model first
    python benchmarks/serve_load.py --model runs/x/checkpoints/ema.safetensors --steps 25 --clients 1,2,4

A real `difforge serve` runs in a subprocess on 127.0.0.1 (a free port); each client sends
``--requests`` POST /v1/generate calls one after another (JSON with base64 PNGs), all clients at
once. Requests per minute count the answered (200) requests over the wall time of the row;
latency is per request, client side (queueing included). The server's queue is made large
enough that no request is refused, so 4 clients measure queueing, not 429s.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional


def tiny_model(tmp: Path) -> str:
    """A 16 px conditional UNet trained for a few steps (as the tests use): speed, not quality."""
    from difforge.train.trainer import Trainer

    net = {"base_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [8], "head_channels": 16}
    trainer = Trainer(progress=False, runs_dir=str(tmp / "runs"), run="bench", image_size=16, builtin_per_class=6,
                      network_options=net, batch_size=8, lr=2e-3, max_steps=10, log_every=10, checkpoint_every=1000,
                      preview_num=4, preview_steps=2, precision="fp32", seed=0)
    return str(trainer.fit().model_file)


class Server:
    def __init__(self, model: str, queue: int, threads: int, log: Path, timeout: float = 120.0):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "difforge", "serve", model, "--port", "0", "--queue", str(queue)],
                                     stdout=subprocess.PIPE, stderr=self._log, env=env)
        line, deadline = b"", time.monotonic() + timeout
        while b"\n" not in line:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"difforge serve did not start; see {log}")
            if select.select([self.proc.stdout], [], [], 1.0)[0]:
                line += os.read(self.proc.stdout.fileno(), 4096)
        self.url = re.search(rb"http://127\.0\.0\.1:\d+", line).group(0).decode()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def percentile(values: List[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def run_row(url: str, clients: int, requests: int, body: dict) -> dict:
    import httpx

    latencies: List[float] = []
    codes: List[int] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            for i in range(requests):
                t0 = time.perf_counter()
                code = c.post("/v1/generate", json={**body, "seed": 1000 * k + i}).status_code
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    codes.append(code)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = codes.count(200)
    return {"clients": clients, "requests": len(codes), "ok": ok, "wall": wall, "rpm": ok / wall * 60,
            "p50": percentile(latencies, 50), "p90": percentile(latencies, 90), "p99": percentile(latencies, 99)}


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model file (default: train a tiny 16 px model)")
    ap.add_argument("--clients", default="1,4", help="concurrent clients per row (default 1,4)")
    ap.add_argument("--requests", type=int, default=10, help="requests per client per row (default 10)")
    ap.add_argument("--num", type=int, default=1, help="images per request")
    ap.add_argument("--steps", type=int, default=10, help="sampler steps per image")
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server (OMP_NUM_THREADS)")
    args = ap.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_model(Path(tmp))
        server = Server(model, queue=max(clients) + 1, threads=args.threads, log=Path(tmp) / "serve.log")
        try:
            body = {"num": args.num, "steps": args.steps, "sampler": args.sampler}
            run_row(server.url, 1, 2, body)  # warm up
            rss0 = server.rss_mb()
            print(f"# {Path(model).name}: {args.num} image(s) x {args.steps} {args.sampler} steps per request, "
                  f"server torch threads {args.threads}, {os.cpu_count()} CPUs, loopback HTTP + JSON/base64 PNG")
            print("| clients | requests | 200 | req/min | p50 ms | p90 ms | p99 ms | server RSS MB |")
            print("|---|---|---|---|---|---|---|---|")
            for c in clients:
                r = run_row(server.url, c, args.requests, body)
                print(f"| {c} | {r['requests']} | {r['ok']} | {r['rpm']:.0f} | {r['p50'] * 1e3:.0f} | {r['p90'] * 1e3:.0f} | "
                      f"{r['p99'] * 1e3:.0f} | {server.rss_mb():.0f} |", flush=True)
            print(f"# server RSS after warm-up {rss0:.0f} MB")
        finally:
            server.close()


if __name__ == "__main__":
    main()
