import os

import pytest
import torch

# One thread per test process: the suite's CLI subprocesses run beside it, and on a loaded
# 2-core machine two OpenMP threads per process wait on each other (measured 50x slower).
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_NET = {"base_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [8], "head_channels": 16}


def tiny_overrides(tmp_path, **kw):
    """A run small enough to train in a few seconds on 2 CPU cores."""
    base = dict(
        runs_dir=str(tmp_path / "runs"),
        run="t",
        image_size=16,
        builtin_per_class=6,
        network_options=dict(TINY_NET),
        batch_size=8,
        lr=2e-3,
        max_steps=20,
        log_every=1,
        checkpoint_every=1000,
        preview_num=4,
        preview_steps=4,
        precision="fp32",
        seed=0,
    )
    base.update(kw)
    return base


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A trained tiny conditional model file, shared by the pipeline and CLI tests."""
    from difforge.train.trainer import Trainer

    tmp = tmp_path_factory.mktemp("tiny_model")
    result = Trainer(progress=False, **tiny_overrides(tmp, max_steps=10)).fit()
    return result.model_file
