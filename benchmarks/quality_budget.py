"""Quality per CPU-minute (issue 16): which recipe gives the best samples in M minutes of training?

For every dataset (``--datasets``: the built-in defect textures, and the grey glyphs that are
unlike them: shapes, mirror-asymmetric classes), recipe (``--recipes``: iddm, classic = the old
defaults, fast = the new defaults), budget M (``--minutes``) and image size (``--sizes``) this
trains with ``--max-minutes M``, samples 100 class-conditional images with the sampling defaults
(timed) and scores them with a judge classifier trained only on real images the models never saw
(benchmarks/demo_quality.py's CNN; no flips for glyphs): class accuracy of the samples, Frechet
distance and KID in the judge's features (penultimate layer), precision / recall, and the
memorisation fraction (difforge.metrics.memorisation, in pixels and in the judge's features),
next to the real-vs-real floor (as many other held-out real images, scored the same way).

The budget is *process CPU time* of one torch thread (``--clock cpu``, default) so that a shared,
busy machine gives the same number of steps per budget as a quiet one. One thread, because with
two the OpenMP threads spin at every barrier while another process holds a core, and that spinning
counts as CPU time (measured: a unet-tiny step cost 1.4 CPU-s per thread under load, about 0.2 s
quiet). M minutes are then M minutes of one core. ``--clock wall`` (2 threads) is what a user's
``--max-minutes`` does, on a quiet machine only: from 64 px that is a cascade (a half-size model and an x2
upsampler side by side, one thread each, difforge/train/cascade.py; its steps read "base + upsampler x2"),
which one thread cannot train, so ``--clock cpu`` measures the one full-size model. The CPU model, flags
and load average are printed.

    python benchmarks/quality_budget.py --minutes 3 12 --sizes 32 64      # the issue's table (hours)
    python benchmarks/quality_budget.py --sizes 64 --minutes 12 --recipes fast --cfg 1.5 3   # one model, two scales
    python benchmarks/quality_budget.py --smoke                           # a minute: does it run?
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from demo_quality import to_float, train_classifier  # noqa: E402

from difforge.data.builtin import generate_arrays  # noqa: E402
from difforge.data.glyphs import generate_glyphs  # noqa: E402
from difforge.metrics.fid import fid_from_features  # noqa: E402
from difforge.metrics.kid import kernel_inception_distance  # noqa: E402
from difforge.metrics.memorisation import memorisation  # noqa: E402
from difforge.metrics.precision_recall import precision_recall  # noqa: E402


@torch.no_grad()
def judge(clf, images_nhwc):
    """(predicted classes, penultimate features) of uint8 images."""
    x = to_float(images_nhwc)
    feats = torch.cat([clf.features(x[i : i + 256]).mean(dim=(2, 3)) for i in range(0, len(x), 256)])
    return clf.head(feats).argmax(1), feats.numpy().astype(np.float64)


def scores(clf, images, labels, real_feats, train_images, train_feats):
    pred, feats = judge(clf, images)
    kid, _ = kernel_inception_distance(real_feats, feats, subsets=20, subset_size=min(100, len(feats)))
    p, r = precision_recall(real_feats, feats)
    return dict(acc=float((pred == torch.as_tensor(labels)).float().mean()), fd=fid_from_features(real_feats, feats),
                kid=kid, precision=p, recall=r, mem_px=memorisation(images, train_images)["fraction"],
                mem_feat=memorisation(feats, train_feats)["fraction"])


def as_channels(imgs: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N, H, W, C) images with ``channels`` channels, as the judge sees the real data: grey
    repeated to RGB, or RGB averaged to grey."""
    if imgs.shape[-1] == channels:
        return imgs
    if channels == 3:
        return np.repeat(imgs, 3, -1)
    return imgs.astype(np.float32).mean(-1, keepdims=True).round().astype(np.uint8)


class Judge:
    """The judge of a dataset and size: a CNN trained only on real images (seed 1), the reference
    features of 25 held-out real images per class (seed 2), the training images (seed 0) for the
    memorisation check, and the real-vs-real ``floor``. ``score(images, labels)`` scores samples."""

    def __init__(self, dataset: str, size: int, per_class: int = 150, smoke: bool = False, eval_per_class: int = 25):
        data = real_images(dataset, size, 100 if smoke else 400, seed=1)
        self.clf, self.names = train_classifier(size, data[0].shape[-1], data=data, epochs=2 if smoke else 8, flips=dataset != "glyphs")
        self.eval_per_class = eval_per_class
        real, _, _ = real_images(dataset, size, eval_per_class, seed=2)
        self.real_feats = judge(self.clf, real)[1]
        self.train, _, _ = real_images(dataset, size, per_class, seed=0)
        self.train_feats = judge(self.clf, self.train)[1]
        self.floor = real_floor(self.clf, dataset, size, eval_per_class, self.real_feats, self.train, self.train_feats)

    def score(self, images: np.ndarray, labels) -> dict:
        """Scores of uint8 (N, H, W, C) samples, in the real data's channels."""
        return scores(self.clf, as_channels(images, self.train.shape[-1]), labels, self.real_feats, self.train, self.train_feats)


def real_floor(clf, dataset: str, size: int, per_class: int, real_feats, train, train_feats):
    """The real-vs-real floor: as many other held-out real images (another seed) scored exactly like
    samples, against the same reference features. Same-size sets matter: the Frechet distance of a
    finite sample is biased upward by about 1/n, so a floor from half-size sets would be too high."""
    other, other_labels, _ = real_images(dataset, size, per_class, seed=3)
    return scores(clf, other, other_labels, real_feats, train, train_feats)


def cpu_clock():
    """Seconds of process CPU time per torch thread: with T threads busy, it runs at wall speed on a
    quiet machine and slows down as other processes take the cores. The CPU time of finished child
    processes counts too: ``--compile`` runs the C++ compiler as children (a cold compile of
    unet-tiny: ~85 s of gcc beside ~35 s in this process), and a budget that left them out would give
    a compiled run free minutes."""
    threads = max(1, torch.get_num_threads())

    def clock() -> float:
        t = os.times()
        return (t.user + t.system + t.children_user + t.children_system) / threads
    return clock


def real_images(dataset: str, size: int, per_class: int, seed: int):
    if dataset == "glyphs":
        return generate_glyphs(size=size, per_class=per_class, seed=seed)
    return generate_arrays(size=size, per_class=per_class, seed=seed, channels=3)


def data_source(dataset: str, size: int, per_class: int, runs_dir: str) -> dict:
    """The training data options of a run on ``dataset``: the built-in defects by count, or the glyphs
    written once as a class-folder dataset under ``runs_dir`` (seed 0, as the judge's training images)."""
    if dataset != "glyphs":
        return dict(builtin_per_class=per_class)
    from difforge.data.glyphs import write_glyphs

    data_dir = str(Path(runs_dir) / f"data-glyphs-{size}px-{per_class}")
    write_glyphs(data_dir, size=size, per_class=per_class, seed=0, progress=False)
    return dict(data=data_dir)


def print_table(rows, head) -> None:
    """``rows`` (dicts) as a Markdown table of the ``head`` columns ('-' where a row has none)."""
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for r in rows:
        print("| " + " | ".join(f"{r.get(k, '-'):.3g}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in head) + " |")


def sampled_rows(pipe, jd: "Judge", scales, label: str, sample_seed: int = 1000, upscale=None, **row) -> list:
    """One row per guidance scale (None: the sampling default): class-conditional images of ``pipe``
    (seed ``sample_seed``; ~100, or ``jd.eval_per_class`` per class when that is not the default 25),
    timed, scored by ``jd``; ``row`` holds the other columns. ``upscale``: an upsampler file the images go
    through instead of the one a cascade base names (pairs a base with another run's upsampler)."""
    rows = []
    for scale in scales:
        t0 = time.perf_counter()
        num = 100 // len(jd.names) + 1 if jd.eval_per_class == 25 else jd.eval_per_class
        opts = ({} if scale is None else dict(cfg=scale)) | ({} if upscale is None else dict(upscale=upscale))
        out = pipe.generate(num=num, class_label="all", seed=sample_seed, **opts)
        dt = (time.perf_counter() - t0) * 100 / len(out.images)
        s = jd.score(out.images.numpy(), out.labels.numpy())  # a grey model of colour data is compared as RGB
        rows.append(dict(row, recipe=label if scale is None else f"{label}, cfg {scale:g}", sample_s=round(dt, 1), **s))
        print(f"row: {rows[-1]} (loadavg {loadavg()})", flush=True)
    return rows


def machine() -> str:
    import subprocess

    try:
        info = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
        flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in info.get("Flags", "")]
        return f"{info.get('Model name', '?').strip()}, flags {' '.join(flags)}, {torch.get_num_threads()} torch threads"
    except (OSError, ValueError):
        return "unknown CPU"


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["defects", "glyphs"], choices=["defects", "glyphs"])
    ap.add_argument("--minutes", type=float, nargs="+", default=[3.0, 12.0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--recipes", nargs="+", default=["iddm", "classic", "fast"])
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="what the time budget counts (see above)")
    ap.add_argument("--runs-dir", default="runs/quality_budget")
    ap.add_argument("--smoke", action="store_true", help="16 px, 0.1 min, fast only: checks that it runs")
    ap.add_argument("--cfg", type=float, nargs="+", default=[None], help="guidance scales to sample each model with (default: the sampling default)")
    ap.add_argument("--train-options", type=json.loads, default={}, metavar="JSON",
                    help="extra training settings for every run, e.g. '{\"crop_p\": 0.5}' (a variant; named in the run and the rows)")
    ap.add_argument("--network-options", type=json.loads, default={}, metavar="JSON",
                    help='extra network options for every run, e.g. \'{"norm": "channel"}\' (a variant; named in the run and the rows)')
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds: one model per seed (the run-to-run spread)")
    ap.add_argument("--score", nargs="+", default=[], metavar="MODEL",
                    help="score these model files (of --datasets / --sizes) with the judge, without training (no --minutes runs)")
    ap.add_argument("--upscale", metavar="UPSAMPLER", default=None,
                    help="with --score: sample each model through this upsampler file (a 32 px base scored at --sizes 64), "
                         "instead of the upsampler a cascade base names")
    ap.add_argument("--floor-only", action="store_true", help="only the real-vs-real rows (the judge is deterministic: same floor as a full run)")
    ap.add_argument("--eval-per-class", type=int, default=25,
                    help="held-out real images per class as the reference and the floor, and samples per class (default 25, "
                         "~100 in all; the distance of 100 images is noisy: 400 halves the spread between sampling seeds)")
    ap.add_argument("--sample-seeds", type=int, nargs="+", default=[1000], help="score each model with these sampling seeds")
    args = ap.parse_args()
    if args.upscale and not args.score:
        ap.error("--upscale pairs the models of --score with an upsampler; give --score MODEL")
    if args.smoke:
        args.minutes, args.sizes, args.recipes, args.per_class = [0.1], [16], ["fast"], 20
    if args.floor_only or args.score:
        args.minutes = []

    from difforge.pipeline import Pipeline
    from difforge.train.presets import preset_values
    from difforge.train.trainer import Trainer

    print(f"# {machine()}; budget clock: {args.clock}; loadavg before {loadavg()}")
    if args.clock == "cpu":
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # the trainer's set_threads keeps a user choice
    clock = cpu_clock() if args.clock == "cpu" else time.perf_counter
    rows = []
    for dataset in args.datasets:
        for size in args.sizes:
            jd = Judge(dataset, size, args.per_class, args.smoke, args.eval_per_class)
            rows.append(dict(dataset=dataset, recipe="real held-out", minutes="-", size=size, steps="-", seen="-", sample_s="-", **jd.floor))
            print(f"row: {rows[-1]}", flush=True)
            for path in args.score:
                pipe = Pipeline.from_checkpoint(path)
                for ss in args.sample_seeds:
                    label = path + (f" + {args.upscale}" if args.upscale else "") + ("" if ss == 1000 else f", sampling seed {ss}")
                    rows += sampled_rows(pipe, jd, args.cfg, label, sample_seed=ss, upscale=args.upscale, dataset=dataset,
                                         minutes="-", size=size, steps=pipe.meta["train"]["step"], seen="-")
            source = data_source(dataset, size, args.per_class, args.runs_dir)
            for minutes in args.minutes:
                for recipe, seed in [(r, s) for r in args.recipes for s in args.seeds]:
                    extra = {**args.network_options, **args.train_options}
                    variant = "".join(f"-{k}={v}" for k, v in extra.items()) + (f"-seed{seed}" if seed else "")
                    run = f"{dataset}-{recipe}-{size}px-{minutes:g}min{variant}"
                    cfg = dict(preset_values(recipe), run=run, runs_dir=args.runs_dir, image_size=size,
                               max_minutes=minutes, batch_size=16, seed=seed)
                    if args.network_options:
                        cfg["network_options"] = {**cfg.get("network_options", {}), **args.network_options}
                    cfg.update(args.train_options)
                    cfg.update(source)
                    if size < 32 and cfg.get("network") == "unet":
                        cfg["network"] = "unet-small"  # the 4-level unet needs 32 px or more at the smoke size
                    trainer = Trainer(progress=False, clock=clock, **cfg)
                    result = trainer.fit()
                    steps, seen = result.steps, result.steps * 16
                    if trainer.config.train.cascade is True:  # a half-size model + its upsampler's steps (train/cascade.py)
                        from difforge.modelfile import read_metadata

                        up_steps = read_metadata(result.run_dir / "upsampler" / "checkpoints" / "ema.safetensors")["train"]["step"]
                        steps, seen = f"{result.steps} + {up_steps} x2", f"{seen} + {up_steps * 16}"
                    rows += sampled_rows(Pipeline.from_checkpoint(result.model_file), jd, args.cfg, recipe + variant, dataset=dataset,
                                         minutes=minutes, size=size, steps=steps, seen=seen)
    print(f"# loadavg after {loadavg()}; sample_s = seconds per 100 images with the sampling defaults")
    head = ["dataset", "recipe", "minutes", "size", "steps", "seen", "sample_s", "acc", "fd", "kid", "precision", "recall",
            "mem_px", "mem_feat"]
    print_table(rows, head)


if __name__ == "__main__":
    main()
