"""Do synthetic defects help a defect detector? The downstream (utility) benchmark of issue 19.

Protocol (AnomalyDiffusion / SeaS few-shot split), per seed, on the built-in defect set with exact masks:

1. Real data: per defect type ``--real-per-type`` (<= 10) images; 1/3 train, 2/3 test. Good (defect-free)
   images: ``--good-train`` for training (backgrounds and negatives; good images are the cheap ones in a
   factory), ``--good-test`` for testing.
2. Generator: a mask-conditioned inpainting model (``difforge train --mask-conditioning``) trained on the
   real train split only (defects + good) for ``--gen-cpu-seconds`` of process CPU time per torch thread.
3. Synthesis (``difforge.pipeline.synth``, what ``difforge synth`` runs): per type, a real train mask of that
   type, randomly flipped / turned / moved (``--mask-jitter``: also scaled 0.7-1.4 and turned by any angle), is
   painted on a random real good train image by the generator (the defect class as label); the placed mask is the label. Written as OUT/seedN/synth/<type>/ with
   manifest.jsonl (``difforge export`` reads it; every line regenerates its image).
4. Downstream: the same small segmenter (:class:`TinySegmenter`) and classifier (demo_quality's SmallCNN,
   5 classes: 4 types + good) are trained for the same number of steps on: real only; real + synthetic at
   synthetic:real ratios ``--ratios``; synthetic only (the largest ratio). Real good train images are in
   every set. Judged on the real test split: pixel AP, IoU and F1 of defect pixels (threshold 0.5),
   image accuracy; each score the mean of ``--inits`` initialisations (default 3), so a seed's number
   says what its data teach rather than how one initialisation fell.

Reported: mean +- std over ``--seeds`` seeds (each seed draws new real images and retrains everything),
wall seconds of every part, the CPU, load average before/after ("under load" above 2.5). Target of the
issue: real + synthetic beats real only by >= 5 points of pixel AP and of accuracy, seed spreads apart.

    flock /tmp/difforge-bench.lock .venv/bin/python benchmarks/downstream.py            # full protocol
    .venv/bin/python benchmarks/downstream.py --smoke                                  # a minute: it runs
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from difforge.data.builtin import CLASSES, GOOD, make_image_and_mask  # noqa: E402
from downstream_models import accuracy, segmentation_scores, train_image_classifier, train_segmenter  # noqa: E402
from quality_budget import loadavg, machine  # noqa: E402

NAMES = list(CLASSES) + [GOOD]
METRICS = (("pixel_ap", "pixel AP"), ("iou", "IoU"), ("f1", "F1"), ("acc", "accuracy"))


def real_data(seed: int, size: int, per_type: int, good_train: int, good_test: int):
    """(train, test): dicts of uint8 images (N, H, W, 3), bool masks (N, H, W), int labels (N,)."""
    parts = {"train": ([], [], []), "test": ([], [], [])}
    n_train = max(1, per_type // 3)
    for c in range(len(NAMES)):
        n = per_type if c < len(CLASSES) else good_train + good_test
        cut = n_train if c < len(CLASSES) else good_train
        for i in range(n):
            img, mask, _ = make_image_and_mask(c, size, np.random.default_rng([seed, c, i]))
            for lst, v in zip(parts["train" if i < cut else "test"], (img, mask, c)):
                lst.append(v)
    return tuple({"images": np.stack(a), "masks": np.stack(b), "labels": np.array(c)} for a, b, c in parts.values())


def write_pairs(root: Path, data) -> Path:
    for k, (img, mask, c) in enumerate(zip(data["images"], data["masks"], data["labels"])):
        for sub, arr in (("images", img), ("masks", mask.astype(np.uint8) * 255)):
            path = root / sub / NAMES[c] / f"{NAMES[c]}_{k:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    return root


def cpu_clock() -> float:
    """Process CPU seconds per torch thread (read at each call: the trainer may set the thread count):
    at wall speed on a quiet machine, slower when other processes take the cores, so a budget in it
    buys the same training whatever the load."""
    return time.process_time() / max(1, torch.get_num_threads())


def train_generator(root: Path, runs_dir: Path, size: int, cpu_seconds: float, seed: int, reuse: bool = False) -> tuple:
    """(model file, wall seconds). With ``reuse`` a generator this benchmark trained before in ``runs_dir`` (same
    seed, so the same real images) is taken as it is, with the wall time it took then (generator.json)."""
    from difforge.train.trainer import Trainer

    record = runs_dir / "generator.json"
    if reuse and record.exists():
        done = json.loads(record.read_text())
        if Path(done["model_file"]).exists() and done["cpu_seconds"] == cpu_seconds:
            return Path(done["model_file"]), done["wall_seconds"]
    t0 = time.perf_counter()
    result = Trainer(progress=False, clock=cpu_clock, data=str(root / "images"), task="inpaint", image_size=size,
                     max_minutes=cpu_seconds / 60.0, batch_size=16, seed=seed, run=f"generator-{seed}", runs_dir=str(runs_dir),
                     ema_select=False, preview_num=2, preview_steps=5, checkpoint_every=100000).fit()
    wall = time.perf_counter() - t0
    record.write_text(json.dumps({"model_file": str(result.model_file), "cpu_seconds": cpu_seconds, "wall_seconds": wall}))
    return Path(result.model_file), wall


def synthesise(model_file: Path, root: Path, per_type: int, seed: int, steps: int, out: Path, jitter: bool = False):
    """``per_type`` synthetic images per defect type by ``difforge.pipeline.synth`` (what ``difforge synth`` runs):
    a mask of that type from ROOT/masks/<type>/ flipped / turned / moved, painted on a good image of
    ROOT/images/good/. Written to OUT/<type>/ (images/, masks/, manifest.jsonl; each line regenerates its image)."""
    from difforge.data.manifest import read_manifest
    from difforge.pipeline import Pipeline, SampleConfig
    from difforge.pipeline.synth import MaskBank, SynthSettings, image_files, synthesize

    pipe = Pipeline.from_checkpoint(str(model_file))
    settings = SynthSettings("mask-conditioned", SampleConfig(sampler="ddim", steps=steps))
    bank, good = MaskBank.from_folder(root / "masks"), image_files(root / "images" / GOOD)
    imgs, masks, labels = [], [], []
    for c, name in enumerate(CLASSES):
        folder = out / name
        synthesize(pipe, model_file, good, folder, per_type, settings=settings, bank=bank, class_name=name, seed=100000 * seed + 1000 * c,
                   jitter=jitter)
        for line in read_manifest(folder):
            imgs.append(np.asarray(Image.open(folder / line["image"]).convert("RGB")))
            masks.append(np.asarray(Image.open(folder / line["mask"]).convert("L")) > 127)
            labels.append(c)
    return {"images": np.stack(imgs), "masks": np.stack(masks), "labels": np.array(labels)}


def tensors(parts):
    imgs = np.concatenate([p["images"] for p in parts])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    m = torch.from_numpy(np.concatenate([p["masks"] for p in parts]))[:, None].float()
    return x, m, torch.from_numpy(np.concatenate([p["labels"] for p in parts])).long()


def subset(data, keep):
    return {k: v[keep] for k, v in data.items()}


def training_sets(train, syn, ratios, n_real_per_type):
    """name -> list of parts: real good images always; real defects and/or the first k synthetic per type."""
    good = subset(train, train["labels"] == len(CLASSES))
    real = subset(train, train["labels"] < len(CLASSES))
    sets = {"real only": [real, good]}
    for r in ratios:
        keep = np.concatenate([np.flatnonzero(syn["labels"] == c)[: int(r * n_real_per_type)] for c in range(len(CLASSES))])
        sets[f"real + syn {r:g}:1"] = [real, subset(syn, keep), good]
    sets[f"syn only ({max(ratios):g}x)"] = [syn, good]
    return sets


def run_seed(seed: int, args, out: Path, log) -> tuple:
    times = {}
    t0 = time.perf_counter()
    train, test = real_data(seed, args.size, args.real_per_type, args.good_train, args.good_test)
    root = write_pairs(out / f"seed{seed}" / "real_train", train)
    times["data"] = time.perf_counter() - t0
    model, times["generator"] = train_generator(root, out / f"seed{seed}" / "runs", args.size, args.gen_cpu_seconds, seed, args.reuse)
    n_real = max(1, args.real_per_type // 3)
    t0 = time.perf_counter()
    syn = synthesise(model, root, int(max(args.ratios) * n_real), seed, args.synth_steps,
                     out / f"seed{seed}" / ("synth-jitter" if args.mask_jitter else "synth"), args.mask_jitter)
    times["synthesis"] = time.perf_counter() - t0
    xt, mt, yt = tensors([test])
    scores, seconds = {}, {}
    for name, parts in training_sets(train, syn, args.ratios, n_real).items():
        x, m, y = tensors(parts)
        t0, runs = time.perf_counter(), []
        for init in range(args.inits):  # init 0 is the seed itself: --inits 1 is the single-init protocol
            seg = train_segmenter(x, m, args.steps, seed + 1000 * init)
            clf = train_image_classifier(x, y, len(NAMES), args.steps, seed + 1000 * init)
            runs.append(dict(segmentation_scores(seg, xt, mt), acc=accuracy(clf, xt, yt)))
        seconds[name] = (time.perf_counter() - t0) / args.inits
        scores[name] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        log(f"seed {seed} {name}: {len(x)} images, " + ", ".join(f"{k} {v:.3f}" for k, v in scores[name].items()) + f" ({seconds[name]:.0f} s)")
    times["downstream"] = sum(seconds.values())
    return scores, seconds, times


def merge_runs(args, results, seconds, parts):
    """Fill ``results`` / ``seconds`` / ``parts`` from ``args.merge``'s downstream.json files (runs of the same
    setup, e.g. one seed per process); ``args`` takes their setup. Returns (first load, last load, the first
    run's --out, for the samples grid)."""
    runs = [json.loads(Path(p).read_text()) for p in args.merge]
    keys = ("size", "real_per_type", "good_train", "good_test", "gen_cpu_seconds", "synth_steps", "ratios", "steps", "threads", "inits",
            "mask_jitter")
    for r in runs:
        r["setup"].setdefault("inits", 1)  # files written before --inits / --mask-jitter existed
        r["setup"].setdefault("mask_jitter", False)
    for r in runs[1:]:
        if any(r["setup"][k] != runs[0]["setup"][k] for k in keys):
            sys.exit(f"--merge: {args.merge[0]} and another file differ in their setup ({', '.join(keys)} must agree)")
    for k in keys:
        setattr(args, k, runs[0]["setup"][k])
    args.seeds = [s for r in runs for s in r["setup"]["seeds"]]
    for r in runs:
        for cond, v in r["results"].items():
            for k, vals in v.items():
                results.setdefault(cond, {}).setdefault(k, []).extend(vals)
        for cond, vals in r["seconds"].items():
            seconds.setdefault(cond, []).extend(vals)
        for k, vals in r["parts"].items():
            parts.setdefault(k, []).extend(vals)
    return runs[0]["loadavg"][0], runs[-1]["loadavg"][1], Path(runs[0]["setup"]["out"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--real-per-type", type=int, default=3, help="real images per defect type (<= 10; 1/3 train; default 3: 1 train / 2 test)")
    ap.add_argument("--good-train", type=int, default=24)
    ap.add_argument("--good-test", type=int, default=12)
    ap.add_argument("--gen-cpu-seconds", type=float, default=900.0, help="generator budget, process CPU seconds per torch thread")
    ap.add_argument("--synth-steps", type=int, default=25, help="DDIM steps per synthetic image")
    ap.add_argument("--ratios", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0], help="synthetic:real ratios")
    ap.add_argument("--steps", type=int, default=600, help="training steps of each segmenter and classifier")
    ap.add_argument("--inits", type=int, default=3,
                    help="train each segmenter / classifier from this many initialisations and average their scores (judge noise)")
    ap.add_argument("--mask-jitter", action="store_true", help="synth --mask-jitter: real masks also scaled and turned by any angle")
    ap.add_argument("--reuse", action="store_true", help="take the generator a previous run left in OUT/seedN/runs (same seed and budget)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/downstream")
    ap.add_argument("--results", default="benchmarks/results", help="where downstream.md / .json / .png go")
    ap.add_argument("--smoke", action="store_true", help="16 px, 1 seed, tiny budgets: checks that it runs")
    ap.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                    help="write one table of runs made apart (e.g. one seed per process): their downstream.json files, same setup")
    args = ap.parse_args()
    if args.smoke:
        args.seeds, args.size, args.gen_cpu_seconds, args.synth_steps, args.steps, args.ratios, args.inits = [0], 16, 5, 3, 10, [1.0], 1
    if not 3 <= args.real_per_type <= 10:
        ap.error("--real-per-type must be 3..10 (the few-shot protocol)")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # difforge.runtime.set_threads keeps it
    torch.set_num_threads(args.threads)
    from downstream_report import bar_chart, samples_grid, table

    load0, start = loadavg(), time.perf_counter()
    print(f"# {machine()}; loadavg before {load0}")
    out = Path(args.out)
    results, seconds, parts = {}, {}, {}
    if args.merge:
        load0, load1, out = merge_runs(args, results, seconds, parts)
    for seed in ([] if args.merge else args.seeds):
        sc, secs, times = run_seed(seed, args, out, lambda s: print(s, flush=True))
        for cond, v in sc.items():
            for k, val in v.items():
                results.setdefault(cond, {}).setdefault(k, []).append(val)
            seconds.setdefault(cond, []).append(secs[cond])
        for k, v in times.items():
            parts.setdefault(k, []).append(v)
    if not args.merge:
        load1 = loadavg()
    under = max(float(load0.split()[0]), float(load1.split()[0])) > 2.5
    n_train = max(1, args.real_per_type // 3)
    setup = (f"{args.size} px, {n_train} real train / {args.real_per_type - n_train} real test images per defect type, "
             f"{args.good_train} / {args.good_test} good; generator {args.gen_cpu_seconds:g} CPU-s, {args.synth_steps} DDIM steps"
             f"{', masks jittered' if args.mask_jitter else ''}; downstream {args.steps} steps x {args.inits} init(s); seeds {' '.join(map(str, args.seeds))}; {args.threads} torch thread(s)")
    md = table(results, METRICS, seconds)
    wall = ", ".join(f"{k} {np.mean(v):.0f} s" for k, v in parts.items())
    print(f"\n# {setup}\n# wall per seed: {wall}; total {time.perf_counter() - start:.0f} s; loadavg after {load1}"
          f"{' (under load)' if under else ''}\n\n{md}")
    res = Path(args.results)
    name = "downstream_smoke" if args.smoke else "downstream"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"{name}.md").write_text(f"{setup}\n\nwall per seed: {wall}; loadavg {load0} -> {load1}{' (under load)' if under else ''}\n\n{md}\n")
    (res / f"{name}.json").write_text(json.dumps({"setup": vars(args), "results": results, "seconds": seconds, "parts": parts,
                                                  "loadavg": [load0, load1], "machine": machine()}, indent=1))
    bar_chart(results, METRICS, res / f"{name}.png", f"segmenter / classifier on real test defects, mean +- std over {len(args.seeds)} "
              f"seed(s); {args.size} px, {n_train} real training image(s) per type")
    samples_grid(out / f"seed{args.seeds[0]}" / "synth", res / f"{name}_samples.png")
    print(f"wrote {res / name}.md / .json / .png / _samples.png")


if __name__ == "__main__":
    main()
