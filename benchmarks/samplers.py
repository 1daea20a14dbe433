"""Sampler benchmark: how close each sampler gets to the data, per number of steps, and how fast.

The built-in problem is exact: data from a 2-D Gaussian mixture whose ideal denoiser is known in
closed form (``tests/diffusion/gmm.py``), so the only error is the sampler's. Distance is the
Frechet distance between the moment-matched Gaussians of the samples and of the data (x1000),
plus the largest error in the fraction of samples per mixture mode. The ``data`` row is the same
measurement on an equal number of true samples: the floor set by the finite sample size.

    python -m benchmarks.samplers                       # all samplers, 5..1000 steps
    python -m benchmarks.samplers --samplers ddim,dpm++2m --steps 10,20 --num 50000

A trained model plugs in through :func:`benchmark`: give it a ``make_denoiser`` factory, the
schedule, the shape of x_T and an ``evaluate(samples) -> dict`` (e.g. FID). ``--model FILE`` does
that for a difforge model file (see :func:`model_problem`): ``--num`` images per class, compared
with the built-in defect dataset at the model's image size (seed 1) by the Frechet distance of a
small fixed random-conv feature extractor (:class:`RandomConvFeatures`), plus seconds per image;
it then names the fastest setting within 5% of the 1000-step DDPM distance.

    python -m benchmarks.samplers --model runs/x/checkpoints/ema.safetensors --num 64 \
        --samplers ddpm,ddim,dpm++2m,unipc --steps-list 10,20,50,1000
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
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
    device: Optional[torch.device] = None,
    verbose: bool = False,
) -> List[dict]:
    """Run every sampler at every step count from the same x_T; one result row per run.

    ``spacing`` None uses each sampler's :func:`default_spacing`. Rows hold sampler, steps,
    spacing, nfe, seconds per sample and whatever ``evaluate`` returns. ``verbose`` reports each
    row on stderr as soon as it is measured (long runs).
    """
    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn(x_shape, generator=gen, dtype=torch.float64).to(dtype)
    if device is not None:
        x_T = x_T.to(device)
        y = None if y is None else y.to(device)
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
            with torch.inference_mode():
                out = sampler(den, x_T, schedule, ts, y=y, generator=torch.Generator().manual_seed(seed + 1))
                if out.is_cuda:
                    torch.cuda.synchronize()
            secs = time.perf_counter() - start
            rows.append(dict(sampler=name, steps=n, spacing=sp, nfe=den.nfe, s_per_sample=secs / x_shape[0], **evaluate(out)))
            if verbose:
                print("  done: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()), file=sys.stderr, flush=True)
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


class RandomConvFeatures:
    """A fixed, seeded random conv net as a cheap feature extractor for a Frechet distance.

    Three 3x3 conv + ReLU layers (16, 32, 64 channels, 2x2 average pooling between them), He-normal
    weights from ``torch.Generator().manual_seed(seed)``, no training. The features are the global
    averages of every layer's output, concatenated (16 + 32 + 64 = 112 dims): colour and texture
    statistics at three scales. Random conv features separate image distributions surprisingly well
    and need no weight file; but the numbers are *not* comparable with Inception FID, only with each
    other (same model, same image size, same number of samples). Pixel-space features were the
    alternative; at 16-64 px they are dominated by exact positions, which a defect's class does not fix.
    """

    def __init__(self, channels: int = 3, widths=(16, 32, 64), seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.weights = []
        c_in = channels
        for c_out in widths:
            fan_in = c_in * 9
            self.weights.append(torch.randn(c_out, c_in, 3, 3, generator=gen, dtype=torch.float64).float() * math.sqrt(2.0 / fan_in))
            c_in = c_out

    def __call__(self, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Float images (N, C, H, W) in [-1, 1] -> features (N, 112), float64."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                h, feats = x[i : i + batch].float().cpu(), []
                for k, w in enumerate(self.weights):
                    if k:
                        h = torch.nn.functional.avg_pool2d(h, 2) if min(h.shape[-2:]) >= 4 else h
                    h = torch.relu(torch.nn.functional.conv2d(h, w, padding=1))
                    feats.append(h.mean(dim=(2, 3)))
                out.append(torch.cat(feats, dim=1).double())
        return torch.cat(out)


def gaussian_fit(features: torch.Tensor):
    """(mean, covariance) of (N, D) features, float64."""
    f = features.double()
    return f.mean(0), torch.cov(f.T)


def frechet_distance(a, b) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two Gaussian fits.

    tr (S_a S_b)^(1/2) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD
    matrix, so only symmetric eigendecompositions are needed (no scipy, stable at low rank).
    """
    (mu_a, s_a), (mu_b, s_b) = a, b
    w, v = torch.linalg.eigh(s_a)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T
    m = root_a @ s_b @ root_a
    tr_cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2.0 * tr_cross)


def model_problem(path: str, num: int, cfg: float = 3.0, device: str = "cpu", precision: str = "fp32") -> dict:
    """``--model FILE``: what :func:`benchmark` needs to measure the samplers on a trained model.

    ``num`` images per class (a conditional model gets y = 0..C-1, each ``num`` times; an
    unconditional one ``num`` x 4 images), compared with ``num`` images per class of the built-in
    defect dataset at the model's size and channels (seed 1) by :func:`frechet_distance` of
    :class:`RandomConvFeatures`. The ``data`` row measures a second real set (seed 2) the same way:
    the floor set by the number of samples. Returns a dict with make_denoiser, schedule, x_shape,
    evaluate, y, data_row and a one-line description.
    """
    from difforge.data.builtin import CLASSES, generate_arrays
    from difforge.errors import UserError
    from difforge.pipeline import Pipeline

    try:
        pipe = Pipeline.from_checkpoint(path, device=device, precision=precision)
    except UserError as e:
        raise SystemExit(f"--model {path}: {e}") from None
    if pipe.class_names and pipe.class_names != list(CLASSES):
        raise SystemExit(
            f"--model {path}: its classes ({', '.join(pipe.class_names)}) are not the built-in dataset's "
            f"({', '.join(CLASSES)}), the reference this benchmark compares with"
        )
    if pipe.image_size < 8:
        raise SystemExit(f"--model {path}: image size {pipe.image_size} is below the built-in dataset's minimum of 8")
    features = RandomConvFeatures(pipe.channels)

    def fit_uint8(arr):
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        return gaussian_fit(features(x))

    real, _, _ = generate_arrays(size=pipe.image_size, per_class=num, seed=1, channels=pipe.channels)
    other, _, _ = generate_arrays(size=pipe.image_size, per_class=num, seed=2, channels=pipe.channels)
    ref = fit_uint8(real)

    def evaluate(x):
        from difforge.data.io import to_uint8

        return {"FD": frechet_distance(fit_uint8(to_uint8(x.float().clamp(-1, 1)).numpy()), ref)}

    y = torch.arange(len(pipe.class_names)).repeat_interleave(num) if pipe.class_names else None
    shape = (len(real), pipe.channels, pipe.image_size, pipe.image_size)
    data_row = dict(sampler="data", steps=0, spacing="-", nfe=0, s_per_sample=math.nan, FD=frechet_distance(fit_uint8(other), ref))
    kind = f"{len(pipe.class_names)} classes, cfg {cfg}" if pipe.class_names else "unconditional"
    describe = (
        f"{path}: {pipe.image_size}px, {kind}, {pipe.meta['diffusion']['noise_schedule']} schedule "
        f"T={pipe.schedule.num_steps}, {len(real)} samples vs the built-in set (seed 1); "
        f"FD of 112-dim random-conv features; device {pipe.device}, {pipe.precision}"
    )
    return dict(make_denoiser=lambda: pipe.denoiser(cfg=cfg), schedule=pipe.schedule, x_shape=shape, evaluate=evaluate,
                y=y, data_row=data_row, device=pipe.device, describe=describe)


def fastest_within(rows: List[dict], metric: str = "FD", tolerance: float = 0.05) -> str:
    """A sentence naming the fastest row whose ``metric`` is within ``tolerance`` of DDPM with 1000 steps."""
    runs = [r for r in rows if r["sampler"] != "data"]
    if not runs:
        return "no sampler runs"
    ref = next((r for r in runs if r["sampler"] == "ddpm" and r["steps"] == 1000), None)
    if ref is None:
        ref = min(runs, key=lambda r: r[metric])
        head = f"no ddpm 1000-step row in this run (add ddpm and 1000 to --samplers / --steps-list); reference: the best measured, {ref['sampler']} {ref['steps']} steps, {metric} {ref[metric]:.4f}"
    else:
        head = f"reference: ddpm 1000 steps, {metric} {ref[metric]:.4f}"
    limit = ref[metric] * (1.0 + tolerance)
    ok = [r for r in runs if r[metric] <= limit]
    best = min(ok, key=lambda r: r["s_per_sample"])
    return (f"{head}\nfastest within {tolerance:.0%} (<= {limit:.4f}): {best['sampler']} {best['steps']} steps "
            f"({best['spacing']}, {best['nfe']} NFE), {metric} {best[metric]:.4f}, {best['s_per_sample']:.2e} s/image")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samplers", default="all", help="comma-separated names, or 'all' (%(default)s)")
    p.add_argument("--steps", "--steps-list", dest="steps", default=",".join(map(str, STEPS)), help="comma-separated step counts (%(default)s)")
    p.add_argument("--spacing", default=None, help="uniform | logsnr | karras (default: each sampler's own)")
    p.add_argument("--schedule", default="linear", help="noise schedule of the built-in problem (%(default)s)")
    p.add_argument("--num", type=int, default=None, help="samples per run (default 20000); with --model: per class (default 64)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (%(default)s)")
    p.add_argument("--model", default=None, help="benchmark a trained difforge model file against the built-in dataset")
    p.add_argument("--cfg", type=float, default=3.0, help="--model: classifier-free guidance scale (%(default)s)")
    p.add_argument("--device", default="cpu", help="--model: cpu, cuda or auto (%(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = available() if args.samplers == "all" else args.samplers.split(",")
    steps = [int(s) for s in args.steps.split(",")]
    if args.model:
        prob = model_problem(args.model, args.num or 64, cfg=args.cfg, device=args.device)
        rows = [prob["data_row"]] + benchmark(prob["make_denoiser"], prob["schedule"], prob["x_shape"], prob["evaluate"], names, steps,
                                              args.spacing, y=prob["y"], device=prob["device"], verbose=True)
        print(prob["describe"])
        print_table(rows, ["FD"])
        print(fastest_within(rows, "FD"))
        return
    schedule = Schedule.named(args.schedule)
    make, shape, evaluate, data_row = gmm_problem(schedule, args.num or 20000)
    rows = [data_row] + benchmark(make, schedule, shape, evaluate, names, steps, args.spacing, dtype=torch.float64)
    print(f"exact 2-D Gaussian-mixture denoiser, {args.schedule} schedule T={schedule.num_steps}, {args.num} samples")
    print_table(rows, ["FDx1000", "mode_err"])


if __name__ == "__main__":
    main()
