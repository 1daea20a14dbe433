"""Fault injection (issue 17): what survives a kill, a full disk, bad files, bad settings and abuse.

- **kill -9**: tiny training runs killed at a random moment; every ``.safetensors`` file left must
  load; then ``--resume`` runs to the end. Counts: resumed ok / corrupt files / steps lost (steps
  logged before the kill minus the step resumed from; mean and max, vs the checkpoint interval).
- **disk full**: every write site fails with ENOSPC (a patched ``os.replace`` under the atomic
  writer, the metrics.csv append, the log.txt flush; a real 192 KB tmpfs when root can mount one):
  one clean line (or a warning where the run rightly goes on) vs a traceback.
- **malformed model files** (the generator of tests/test_model_validation.py): ``info`` and ``sample``.
- **bad settings** (the tables of tests/test_config_validation.py): one-line error / traceback / accepted.
- **server abuse**: ``difforge serve --token``: no/wrong token, oversized bodies (streamed), bad JSON,
  a slow client; 2xx/4xx/5xx counts and the server's peak RSS.

    python benchmarks/faults.py                      # a few minutes on 2 CPU cores
    python benchmarks/faults.py --kills 10 --skip-server
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import fnmatch
import io
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/ holds the malformed-file generator and the bad-value tables
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY = ["--image-size", "16", "--base-channels", "16", "--channel-mult", "1,2", "--num-res-blocks", "1",
        "--attention-resolutions", "8", "--head-channels", "16", "--builtin-per-class", "6", "--batch-size", "8",
        "--precision", "fp32", "--quiet", "--preview-num", "2", "--preview-steps", "2", "--log-every", "1", "--seed", "0"]


# -- running the CLI in this process -----------------------------------------------------------
def run_cli(argv: List[str]) -> Tuple[str, str]:
    """(outcome, stderr): 'ok' (exit 0), 'clean' (exit 2, one error line), 'traceback', or 'exit N'."""
    from difforge.cli.main import main

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    except BaseException as e:  # noqa: B902 - whatever escapes is a traceback for the user
        return "traceback", f"{type(e).__name__}: {e}"
    text = err.getvalue()
    if "Traceback" in text or "Logging error" in text:
        return "traceback", text
    if code == 0:
        return "ok", text
    lines = [l for l in text.strip().splitlines() if "error:" in l]
    return ("clean" if code == 2 and len(lines) == 1 else f"exit {code}"), text


def train_tiny(tmp: Path, steps: int = 10) -> Path:
    outcome, err = run_cli(["train", "--runs-dir", tmp / "runs", "--run", "model", *TINY, "--max-steps", steps])
    assert outcome == "ok", err
    return tmp / "runs" / "model" / "checkpoints" / "ema.safetensors"


# -- kill -9 -------------------------------------------------------------------------------------
def _steps_logged(run: Path) -> int:
    try:
        with open(run / "metrics.csv", newline="") as f:
            return max((int(float(r["step"])) for r in csv.DictReader(f) if r.get("step")), default=0)
    except (OSError, ValueError, KeyError):
        return 0


def _check_files(run: Path) -> Tuple[int, int, int]:
    """(corrupt files, temporary files left, step of the training state or 0)."""
    from difforge.errors import UserError
    from difforge.modelfile import load_model_file
    from difforge.train.checkpoint import load_training_state

    corrupt, step = 0, 0
    for p in sorted((run / "checkpoints").glob("*.safetensors")):
        try:
            if p.name == "state.safetensors":
                step = int(load_training_state(p)["loop"]["step"])
            else:
                load_model_file(p)
        except UserError:
            corrupt += 1
    temps = len(list(run.rglob(".*.tmp")))
    return corrupt, temps, step


def kill_resume(tmp: Path, kills: int, steps: int, every: int, rng: random.Random) -> Dict[str, object]:
    resumed, corrupt, temps, lost = 0, 0, 0, []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in range(kills):
        run = tmp / f"kill{k}"
        base = [sys.executable, "-m", "difforge", "train"]
        flags = ["--runs-dir", tmp, "--run", run.name, *TINY, "--max-steps", steps, "--checkpoint-every", every]
        proc = subprocess.Popen([*base, *map(str, flags)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        # a random moment while training: the clock starts at the first logged step (start-up varies with load)
        started = time.monotonic() + 120
        while _steps_logged(run) < 1 and proc.poll() is None and time.monotonic() < started:
            time.sleep(0.05)
        deadline = time.monotonic() + rng.uniform(0.0, 0.25 * steps)  # ~0.4 s a step here: mostly before the end
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reached = _steps_logged(run)
        c, t, saved = _check_files(run)
        corrupt, temps = corrupt + c, temps + t
        if saved:
            lost.append(max(0, reached - saved))
        again = [*base, "--resume", str(run), "--quiet"] if saved else [*base, *map(str, flags)]
        res = subprocess.run(again, capture_output=True, text=True, env=env, timeout=900)
        c2, _, final = _check_files(run)
        ok = res.returncode == 0 and final == steps and c2 == 0
        resumed += ok
        print(f"  kill {k + 1}/{kills}: logged step {reached}, checkpoint {saved or '-'}, "
              f"{'resumed' if saved else 'restarted'} -> {'ok' if ok else 'FAILED: ' + res.stderr.strip()[-200:]}", file=sys.stderr)
    return {"runs": kills, "resumed ok": resumed, "corrupt files": corrupt, "temp files left": temps,
            "steps lost mean": round(sum(lost) / len(lost), 1) if lost else 0, "steps lost max": max(lost, default=0),
            "checkpoint every": every}


# -- disk full -----------------------------------------------------------------------------------
@contextlib.contextmanager
def full_at(pattern: str):
    """ENOSPC whenever the atomic writer would put a file matching ``pattern`` in place."""
    import difforge.atomic as atomic

    real = atomic.os.replace

    def replace(src, dst, *a, **k):
        if fnmatch.fnmatch(Path(dst).name, pattern):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *a, **k)

    atomic.os.replace = replace
    try:
        yield
    finally:
        atomic.os.replace = real


@contextlib.contextmanager
def patched(obj, name, fn):
    real = getattr(obj, name)
    setattr(obj, name, fn)
    try:
        yield
    finally:
        setattr(obj, name, real)


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def disk_full(tmp: Path, model: Path) -> List[Tuple[str, str, str]]:
    """(site, outcome, message) for every write site."""
    from difforge.train import logging as tlog

    rows = []
    n = iter(range(10_000))

    def train(*extra):
        return run_cli(["train", "--runs-dir", tmp / "df", "--run", f"r{next(n)}", *TINY, "--max-steps", "2", *extra])

    def sample(*extra):
        return run_cli(["sample", model, "--num", "2", "--steps", "2", "--quiet", "--out", tmp / "df" / f"s{next(n)}", *extra])

    sites = [
        ("train: config.yaml", "config.yaml", lambda: train()),
        ("train: metrics.csv (create)", "metrics.csv", lambda: train()),
        ("train: state.safetensors", "state.safetensors", lambda: train()),
        ("train: ema.safetensors", "ema.safetensors", lambda: train()),
        ("train: last.safetensors", "last.safetensors", lambda: train()),
        ("train: numbered snapshot", "step_*.safetensors", lambda: train("--save-every", "1")),
        ("train: preview grid", "step_*.png", lambda: train("--preview-every", "1", "--max-steps", "3")),
        ("train: report.html", "report.html", lambda: train()),
        ("sample: image", "scratch_*.png", lambda: sample()),
        ("sample: grid", "*-grid_*.png", lambda: sample("--grid")),
        ("sample: npz", "*.npz", lambda: sample("--npz")),
        ("sample: trajectory", "*-trajectory.png", lambda: sample("--trajectory", "--trajectory-frames", "2")),
        ("data defects: image", "*.png", lambda: run_cli(["data", "defects", tmp / "df" / "d", "--per-class", "2", "--size", "16"])),
        ("report", "report.html", lambda: run_cli(["report", model.parent.parent])),
        ("card", "*.md", lambda: run_cli(["card", model])),
    ]
    for site, pattern, go in sites:
        with full_at(pattern):
            outcome, err = go()
        rows.append((site, outcome, _last_line(err)))
    real_writerow = csv.DictWriter.writerow
    with patched(csv.DictWriter, "writerow", lambda self, row: _enospc() if isinstance(row.get("step"), int) else real_writerow(self, row)):
        outcome, err = train()
    rows.append(("train: metrics.csv (append)", outcome, _last_line(err)))
    with patched(tlog._RunLogHandler, "flush", lambda self: _enospc()):
        outcome, err = train()
    rows.append(("train: log.txt", "warned" if outcome == "ok" and "cannot write" in err else outcome, _first(err, "cannot write")))
    # a full disk while resuming: the previous checkpoint must stay loadable
    run = tmp / "df" / "resume"
    run_cli(["train", "--runs-dir", run.parent, "--run", run.name, *TINY, "--max-steps", "2"])
    with full_at("state.safetensors"):
        outcome, err = run_cli(["train", "--resume", run, "--max-steps", "4", "--quiet"])
    _, _, step = _check_files(run)
    rows.append(("resume: state.safetensors, previous kept", outcome if step == 2 else "LOST", _last_line(err)))
    rows += real_tmpfs(tmp, model)
    return rows


def real_tmpfs(tmp: Path, model: Path) -> List[Tuple[str, str, str]]:
    """A real small tmpfs (root only): training and sampling into it."""
    mnt = tmp / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)], capture_output=True).returncode:
        return [("real tmpfs", "skipped (needs root and mount)", "")]
    try:
        rows = []
        outcome, err = run_cli(["train", "--runs-dir", mnt, "--run", "r", *TINY, "--max-steps", "2"])
        rows.append(("real 192k tmpfs: train", outcome, _last_line(err)))
        outcome, err = run_cli(["sample", model, "--num", "200", "--steps", "2", "--quiet", "--out", mnt / "s"])
        rows.append(("real 192k tmpfs: sample --num 200", outcome, _last_line(err)))
        return rows
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:160] if lines else ""


def _first(text: str, word: str) -> str:
    return next((l[:160] for l in text.splitlines() if word in l), "")


# -- malformed model files and bad settings -------------------------------------------------------
def malformed(tmp: Path) -> Dict[str, Dict[str, int]]:
    try:
        from tests.test_model_validation import make_variants
    except ImportError:
        return {}
    folder = tmp / "malformed"
    folder.mkdir()
    variants = {k: v for k, v in make_variants(folder).items() if k != "good"}
    out = {}
    for command in ("info", "sample"):
        counts = {"one-line error": 0, "traceback": 0, "accepted": 0, "other": 0, "accepted by": []}
        for name, path in variants.items():
            argv = [command, path] + (["--num", "1", "--steps", "2", "--quiet", "--out", tmp / "mo" / name.replace(" ", "_")] if command == "sample" else [])
            outcome, _ = run_cli(argv)
            key = {"clean": "one-line error", "traceback": "traceback", "ok": "accepted"}.get(outcome, "other")
            counts[key] += 1
            if key == "accepted":
                counts["accepted by"].append(name)
        out[command] = counts
    out["variants"] = len(variants)
    return out


def bad_settings(tmp: Path, model: Path) -> Dict[str, object]:
    from tests.test_config_validation import SAMPLE_BAD, TRAIN_BAD

    counts = {"values": 0, "one-line error": 0, "traceback": 0, "accepted": 0, "other": 0, "problems": []}
    cases = [("train", f, v) for f, v, _ in TRAIN_BAD] + [("sample", f, v) for f, v, _ in SAMPLE_BAD]
    for i, (command, flag, value) in enumerate(cases):
        if command == "train":
            argv = ["train", "--runs-dir", tmp / "bad", "--run", f"b{i}", *TINY, "--max-steps", "1", flag, value]
        else:
            argv = ["sample", model, "--num", "1", "--steps", "2", "--quiet", "--out", tmp / "bad" / f"s{i}", flag, value]
        outcome, err = run_cli(argv)
        key = {"clean": "one-line error", "traceback": "traceback", "ok": "accepted"}.get(outcome, "other")
        counts["values"] += 1
        counts[key] += 1
        if key != "one-line error":
            counts["problems"].append(f"{command} {flag} {value}: {outcome} {_last_line(err)}")
    return counts


# -- server abuse ----------------------------------------------------------------------------------
def server_abuse(tmp: Path, model: Path) -> Dict[str, object]:
    import httpx

    token = "s3cret-token"
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "difforge", "serve", str(model), "--port", "0", "--token", token],
                            stdout=subprocess.PIPE, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line, deadline = b"", time.monotonic() + 120
    while b"\n" not in line and proc.poll() is None and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            line += os.read(proc.stdout.fileno(), 4096)
    found = re.search(rb"http://127\.0\.0\.1:(\d+)", line)
    if not found:
        proc.kill()
        return {"error": f"server did not start; see {tmp / 'serve.log'}"}
    url, port = found.group(0).decode(), int(found.group(1))

    def rss(key: str) -> float:
        with open(f"/proc/{proc.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024

    codes: Dict[str, List[object]] = {}
    good = {"Authorization": f"Bearer {token}"}

    def body(mb: int):
        chunk = b"x" * (1 << 20)
        for _ in range(mb):
            yield chunk

    cases = [
        ("GET /v1/models, no token", "GET", "/v1/models", {}, None),
        ("GET /v1/models, wrong token", "GET", "/v1/models", {"Authorization": "Bearer nope"}, None),
        ("GET /openapi.json, no token", "GET", "/openapi.json", {}, None),
        ("POST 200 MB, no token", "POST", "/v1/generate", {"Content-Type": "application/json"}, 200),
        ("POST 200 MB, token", "POST", "/v1/generate", {**good, "Content-Type": "application/json"}, 200),
        ("POST 5 MB, token", "POST", "/v1/generate", {**good, "Content-Type": "application/json"}, 5),
        ("POST bad JSON, token", "POST", "/v1/generate", {**good, "Content-Type": "application/json"}, "{nope"),
        ("POST num 10^9, token", "POST", "/v1/generate", good, {"num": 10**9}),
        ("POST a good request, token", "POST", "/v1/generate", good, {"num": 1, "steps": 2}),
    ]
    rss0 = rss("VmRSS")
    with httpx.Client(base_url=url, timeout=120) as c:
        for name, method, path, headers, payload in cases:
            for _ in range(4 if isinstance(payload, int) and payload >= 100 else 1):
                try:
                    if isinstance(payload, int):
                        r = c.request(method, path, headers=headers, content=body(payload))
                    elif isinstance(payload, str):
                        r = c.request(method, path, headers=headers, content=payload.encode())
                    else:
                        r = c.request(method, path, headers=headers, json=payload)
                    codes.setdefault(name, []).append(r.status_code)
                except httpx.HTTPError as e:  # the server closed the connection on an oversized body
                    codes.setdefault(name, []).append(f"closed ({type(e).__name__})")
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{")  # then nothing
        t0 = time.perf_counter()
        r = c.get("/v1/health", headers=good)
        codes["health while a client stalls"] = [f"{r.status_code} in {time.perf_counter() - t0:.2f}s"]
        slow.close()
    peak = rss("VmHWM")
    proc.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(15)
    if proc.poll() is None:
        proc.kill()
    log.close()
    flat = [v for vs in codes.values() for v in vs if isinstance(v, int)]
    return {"codes": codes, "4xx": sum(400 <= v < 500 for v in flat), "5xx": sum(v >= 500 for v in flat),
            "2xx": sum(200 <= v < 300 for v in flat), "rss start MB": round(rss0), "rss peak MB": round(peak)}


# -- main ------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=5, help="kill -9 trials (default 5)")
    ap.add_argument("--steps", type=int, default=40, help="steps of each killed run (default 40)")
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-server", action="store_true")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="difforge-faults-") as d:
        tmp = Path(d)
        model = train_tiny(tmp)
        print("== kill -9 during training, then resume", file=sys.stderr)
        kills = kill_resume(tmp, args.kills, args.steps, args.checkpoint_every, rng) if args.kills else {}
        print("== disk full, bad files, bad settings, server", file=sys.stderr)
        full = disk_full(tmp, model)
        bad_files = malformed(tmp)
        settings = bad_settings(tmp, model)
        server = {} if args.skip_server else server_abuse(tmp, model)
    print("\n## kill -9 at a random moment, then --resume")
    for k, v in kills.items():
        print(f"  {k:<22} {v}")
    print("\n## disk full (ENOSPC) at every write site")
    for site, outcome, msg in full:
        print(f"  {site:<42} {outcome:<10} {msg}")
    tally = [o for _, o, _ in full]
    print(f"  -> clean line: {tally.count('clean')}, warned and went on: {tally.count('warned') + tally.count('ok')}, "
          f"traceback: {tally.count('traceback')}, other: {len(tally) - tally.count('clean') - tally.count('warned') - tally.count('ok') - tally.count('traceback')}")
    print(f"\n## malformed model files ({bad_files.get('variants', 0)} variants)")
    for command in ("info", "sample"):
        if command in bad_files:
            c = bad_files[command]
            print(f"  {command:<7} one-line error {c['one-line error']}, traceback {c['traceback']}, accepted {c['accepted']} "
                  f"{c['accepted by'] or ''}, other {c['other']}")
    print(f"\n## bad settings ({settings['values']} values through train / sample)")
    print(f"  one-line error {settings['one-line error']}, traceback {settings['traceback']}, accepted {settings['accepted']}, other {settings['other']}")
    for p in settings["problems"]:
        print(f"    {p}")
    if server:
        print("\n## server abuse (serve --token)")
        for name, got in server.get("codes", {}).items():
            print(f"  {name:<32} {got}")
        print(f"  -> 2xx {server.get('2xx')}, 4xx {server.get('4xx')}, 5xx {server.get('5xx')}, "
              f"RSS {server.get('rss start MB')} MB at start, peak {server.get('rss peak MB')} MB {server.get('error', '')}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
