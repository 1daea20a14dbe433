"""Past one machine: `torchrun --nnodes 2 --nproc-per-node 1` as two node ranks on loopback.

Two torchrun agents (two "nodes") meet through a c10d rendezvous on 127.0.0.1, as two
machines would through node 0's address; gloo carries the all-reduce. The result must equal one
process with the double batch, as in :mod:`tests.train.test_distributed`.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.train.test_distributed import _flags, _run, _weights

pytestmark = [
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in"),
    pytest.mark.slow,  # three short training runs, two of them rendezvousing: ~30-60 s on 2 cores
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(runs, run, batch, steps):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFORGE_DIST_TIMEOUT": "120"}
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"difforge-test-{port}",
               # node 0 hosts the rendezvous store, as the machine named in --rdzv-endpoint does
               "--rdzv-conf", f"is_host={int(node == 0)}", "--max-restarts", "0",
               "-m", "difforge", "train", "--runs-dir", str(runs), "--run-name", run, *_flags(batch, steps)]
        log = open(runs / f"node{node}.log", "w")  # files, not pipes: a full pipe would block its node
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env), log))
    try:
        codes = [p.wait(timeout=400) for p, _ in procs]
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
            log.close()
    logs = [(runs / f"node{node}.log").read_text() for node in (0, 1)]
    for node, (code, log) in enumerate(zip(codes, logs)):
        assert code == 0, f"node {node}: {log[-3000:]}"
    return logs


def test_two_nodes_match_one_process_with_double_batch(tmp_path):
    logs = _two_nodes(tmp_path, "nodes", 4, 4)
    _run(1, tmp_path, "one", 8, 4)
    # c10d assigns global ranks in arrival order (--node-rank is for static rendezvous): either node may be rank 0
    assert sum("global batch 8" in log and "2 process(es)" in log for log in logs) == 1
    a, b = _weights(tmp_path / "nodes"), _weights(tmp_path / "one")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    # only global rank 0 wrote: one metrics row per step, one set of checkpoints
    rows = (tmp_path / "nodes" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4
    assert sorted(p.name for p in (tmp_path / "nodes" / "checkpoints").iterdir()) == ["ema.safetensors", "last.safetensors", "state.safetensors"]
