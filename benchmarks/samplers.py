"""Sampler benchmark: how close each sampler gets to the data, per number of steps, and how fast.

The built-in problem is exact: data from a 2-D Gaussian mixture whose ideal denoiser is known in
closed form (``tests/diffusion/gmm.py``), so the only error is the sampler's. Distance is the
Frechet distance between the moment-matched Gaussians of the samples and of the data (x1000),
plus the largest error in the fraction of samples per mixture mode. The ``data`` row is the same
measurement on an equal number of true samples: the floor set by the finite sample size.

    python -m benchmarks.samplers                       # all samplers, 5..1000 steps
    python -m benchmarks.samplers --samplers ddim,dpm++2m --steps 10,20 --num 50000

A trained model plugs in through :func:`benchmark`: give it a ``make_denoiser`` factory, the
schedule, the shape of x_T and an ``evaluate(samples) -> dict`` (e.g. FID); ``--model FILE`` is
the hook for that (see :func:`model_problem`).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import torch

from difforge.diffusion.samplers import available, get_sampler
from difforge.diffusion.schedule import Schedule
from difforge.diffusion.timesteps import default_spacing, sampling_timesteps

STEPS = (5, 10, 20, 50, 100, 1000)


class _Counted:
    """Counts denoiser evaluations (network function evaluations, NFE)."""

    def __init__(self, denoiser):
        self.denoiser, self.nfe = denoiser, 0

    def __call__(self, x_t, t, y=None):
        self.nfe += 1
        return self.denoiser(x_t, t, y)


def benchmark(
    make_denoiser: Callable[[], Callable],
    schedule: Schedule,
    x_shape: tuple,
    evaluate: Callable[[torch.Tensor], Dict[str, float]],
    samplers: Iterable[str],
    steps: Iterable[int],
    spacing: Optional[str] = None,
    y: Optional[torch.Tensor] = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> List[dict]:
    """Run every sampler at every step count from the same x_T; one result row per run.

    ``spacing`` None uses each sampler's :func:`default_spacing`. Rows hold sampler, steps,
    spacing, nfe, seconds per sample and whatever ``evaluate`` returns.
    """
    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn(x_shape, generator=gen, dtype=torch.float64).to(dtype)
    rows = []
    for name in samplers:
        sampler = get_sampler(name)
        for n in steps:
            if n > schedule.num_steps:
                continue
            sp = spacing or default_spacing(name)
            ts = sampling_timesteps(schedule.num_steps, n, sp, schedule)
            den = _Counted(make_denoiser())
            start = time.perf_counter()
            out = sampler(den, x_T, schedule, ts, y=y, generator=torch.Generator().manual_seed(seed + 1))
            secs = time.perf_counter() - start
            rows.append(dict(sampler=name, steps=n, spacing=sp, nfe=den.nfe, s_per_sample=secs / x_shape[0], **evaluate(out)))
    return rows


def print_table(rows: List[dict], metrics: List[str]) -> None:
    head = f"{'sampler':<12} {'steps':>5} {'spacing':<8} {'nfe':>5} " + " ".join(f"{m:>10}" for m in metrics) + f" {'s/sample':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        vals = " ".join(f"{r[m]:>10.4f}" if isinstance(r[m], float) else f"{r[m]:>10}" for m in metrics)
        sps = r.get("s_per_sample", float("nan"))
        print(f"{r['sampler']:<12} {r['steps']:>5} {r['spacing']:<8} {r['nfe']:>5} {vals} {sps:>9.1e}")


# -- problems ---------------------------------------------------------------------------------


def _load_gmm_module():
    """tests/diffusion/gmm.py, loaded by file path (the tests folder is not a package)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "diffusion" / "gmm.py"
    spec = importlib.util.spec_from_file_location("difforge_bench_gmm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gmm_problem(schedule: Schedule, num: int):
    """(make_denoiser, x_shape, evaluate, data_row) for the exact Gaussian-mixture problem."""
    gmm = _load_gmm_module().three_blobs(schedule)

    def evaluate(x):
        d = gmm.distance(x)
        return {"FDx1000": 1000.0 * d["frechet"], "mode_err": d["mode_err"]}

    data = gmm.sample(num, torch.Generator().manual_seed(99))
    data_row = dict(sampler="data", steps=0, spacing="-", nfe=0, s_per_sample=math.nan, **evaluate(data))
    return (lambda: gmm), (num, 2), evaluate, data_row


def model_problem(path: str, num: int):
    """Hook for ``--model FILE``: return (make_denoiser, schedule, x_shape, evaluate) for a trained model.

    To be wired to ``Pipeline.from_checkpoint(path)``: its denoiser factory, its schedule,
    (num, C, H, W) and an evaluate() computing e.g. FID against the training data.
    """
    raise SystemExit(f"--model {path}: benchmarking a trained model is not wired yet (benchmarks/samplers.py: model_problem)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samplers", default="all", help="comma-separated names, or 'all' (%(default)s)")
    p.add_argument("--steps", default=",".join(map(str, STEPS)), help="comma-separated step counts (%(default)s)")
    p.add_argument("--spacing", default=None, help="uniform | logsnr | karras (default: each sampler's own)")
    p.add_argument("--schedule", default="linear", help="noise schedule of the built-in problem (%(default)s)")
    p.add_argument("--num", type=int, default=20000, help="samples per run (%(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (%(default)s)")
    p.add_argument("--model", default=None, help="benchmark a trained model file instead (hook, not wired yet)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = available() if args.samplers == "all" else args.samplers.split(",")
    steps = [int(s) for s in args.steps.split(",")]
    if args.model:
        make, schedule, shape, evaluate = model_problem(args.model, args.num)
        rows = benchmark(make, schedule, shape, evaluate, names, steps, args.spacing)
        print_table(rows, [k for k in rows[0] if k not in ("sampler", "steps", "spacing", "nfe", "s_per_sample")])
        return
    schedule = Schedule.named(args.schedule)
    make, shape, evaluate, data_row = gmm_problem(schedule, args.num)
    rows = [data_row] + benchmark(make, schedule, shape, evaluate, names, steps, args.spacing, dtype=torch.float64)
    print(f"exact 2-D Gaussian-mixture denoiser, {args.schedule} schedule T={schedule.num_steps}, {args.num} samples")
    print_table(rows, ["FDx1000", "mode_err"])


if __name__ == "__main__":
    main()
