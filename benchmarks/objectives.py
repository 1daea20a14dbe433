"""Which training objective, at equal wall time? L_simple, L_hybrid, L_vlb and SNR weightings.

Trains one small model per objective on the built-in set for the same number of seconds, then
reports for its EMA weights:

- bits/dim of held-out built-in images (seed 1000) under the full variational bound (all T terms,
  prior, discretised decoder; fixed-variance models use fixed_large, see `difforge nll`);
- sample quality: class accuracy of conditional samples (cfg 3) by a small CNN trained on real
  images (``demo_quality.py``'s classifier), and the Frechet distance between that CNN's pooled
  features of the samples and of real held-out images ("FD-cnn"; lower is better), for DDIM with
  25 steps and for ancestral DDPM with 50 steps (learned variance where the model has it).

    python benchmarks/objectives.py                          # 60 s per objective, 16 px
    python benchmarks/objectives.py --seconds 20 --diffusion-steps 250 --threads 1   # short
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import torch

OBJECTIVES = {
    "simple": dict(),
    "hybrid": dict(learn_sigma=True),
    "kl": dict(learn_sigma=True, use_kl=True),
    "kl + loss-second-moment": dict(learn_sigma=True, use_kl=True, schedule_sampler="loss-second-moment"),
    "simple + p2": dict(loss_weighting="p2"),
    "simple + min-snr": dict(loss_weighting="min_snr"),
}


def cnn_features(clf, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([clf.features(x[i : i + 256]).mean(dim=(2, 3)) for i in range(0, len(x), 256)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="training wall time per objective")
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--diffusion-steps", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=64, help="built-in training images per class")
    ap.add_argument("--nll-num", type=int, default=64, help="held-out images for bits/dim")
    ap.add_argument("--samples", type=int, default=25, help="samples per class for the quality numbers")
    ap.add_argument("--only", nargs="*", default=None, help="objective names to run (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: one per physical core)")
    ap.add_argument("--runs-dir", default=None)
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the trainer keeps the user's choice
        torch.set_num_threads(args.threads)

    from demo_quality import accuracy_by_class, to_float, train_classifier

    from difforge.data.builtin import generate_arrays
    from difforge.diffusion.likelihood import dataset_bits_per_dim
    from difforge.metrics.fid import fid_from_features
    from difforge.pipeline import Pipeline
    from difforge.train.trainer import Trainer

    size, names = args.image_size, args.only or list(OBJECTIVES)
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="objectives_"))
    t0 = time.perf_counter()
    clf, classes = train_classifier(size, 3, per_class=150, epochs=4)
    real, real_labels, _ = generate_arrays(size=size, per_class=50, seed=2, channels=3)
    real_x = to_float(real)
    _, real_acc = accuracy_by_class(clf, real_x, torch.as_tensor(real_labels).long(), len(classes))
    real_feat = cnn_features(clf, real_x).numpy()
    held, held_labels, _ = generate_arrays(size=size, per_class=math.ceil(args.nll_num / 4), seed=1000, channels=3)
    pick = torch.randperm(len(held), generator=torch.Generator().manual_seed(0))[: args.nll_num]
    held_images = torch.as_tensor(held).permute(0, 3, 1, 2).contiguous()[pick]
    held_y = torch.as_tensor(held_labels).long()[pick]
    print(f"# classifier: {time.perf_counter() - t0:.0f} s, {real_acc:.0%} on real held-out images; runs in {runs}")

    rows = []
    for name in names:
        settings = OBJECTIVES[name]
        trainer = Trainer(
            progress=False,
            runs_dir=str(runs), run=name.replace(" ", "").replace("+", "_"),
            image_size=size, builtin_per_class=args.per_class, diffusion_steps=args.diffusion_steps,
            network_options=dict(base_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], head_channels=32),
            batch_size=32, lr=1e-3, max_steps=10**9, max_minutes=args.seconds / 60, log_every=50,
            checkpoint_every=10**9, preview_num=4, preview_steps=2, precision="fp32", seed=0, **settings,
        )
        result = trainer.fit()
        pipe = Pipeline.from_checkpoint(result.model_file, device="cpu", precision="fp32")
        t1 = time.perf_counter()
        nll = dataset_bits_per_dim(pipe.denoiser(cfg=1.0), held_images, held_y, batch_size=args.nll_num, seed=0)
        t_nll = time.perf_counter() - t1
        quality = {}
        for sampler, steps in (("ddim", 25), ("ddpm", 50)):
            out = pipe.generate(num=args.samples, class_label="all", sampler=sampler, steps=steps, cfg=3.0, seed=1000, batch_size=100)
            x = to_float(out.images)
            _, acc = accuracy_by_class(clf, x, out.labels, len(classes))
            quality[sampler] = (fid_from_features(real_feat, cnn_features(clf, x).numpy()), acc)
        rows.append((name, result.steps, nll["total"].mean().item(), nll["total"].std().item() / math.sqrt(len(pick)), quality, t_nll))
        print(f"# {name}: {result.steps} steps, bits/dim {rows[-1][2]:.3f} ({t_nll:.0f} s)", flush=True)

    print(f"\n{args.seconds:g} s of training per objective, {size} px, T={args.diffusion_steps}, batch 32, "
          f"{torch.get_num_threads()} thread(s); bits/dim on {len(pick)} held-out images; "
          f"{args.samples} samples/class, cfg 3")
    print("| objective | steps | bits/dim | FD-cnn ddim25 | acc ddim25 | FD-cnn ddpm50 | acc ddpm50 |")
    print("|---|---|---|---|---|---|---|")
    for name, steps, bpd, sem, q, _ in rows:
        print(f"| {name} | {steps} | {bpd:.3f} +- {sem:.3f} | {q['ddim'][0]:.2f} | {q['ddim'][1]:.0%} | {q['ddpm'][0]:.2f} | {q['ddpm'][1]:.0%} |")


if __name__ == "__main__":
    main()
