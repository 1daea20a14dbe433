"""Latent vs pixel diffusion at equal wall time, and the speed of VAE training.

1. Trains a VAE (``task vae``) on the built-in set at ``--image-size`` for ``--vae-seconds``:
   images/s, and validation PSNR / SSIM / MSE on fresh built-in images.
2. Trains a pixel-space and a latent-space diffusion model (UNet) for ``--seconds`` each, from
   the same data, and reports training images/s, steps, sampling seconds per image, and sample
   quality as in ``objectives.py``: class accuracy of conditional samples (cfg 3) by a small
   CNN trained on real images (``demo_quality.py``) and the Frechet distance of that CNN's pooled
   features to real held-out images ("FD-cnn", lower is better). The VAE's reconstructions of
   real held-out images are scored too: the ceiling of any model living in its latent space.

    python benchmarks/latent.py                                         # 64 px: 2 min VAE, 3 min per model
    python benchmarks/latent.py --vae-seconds 60 --seconds 90 --threads 1   # shorter
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import torch


def _images_per_s(run_dir: Path) -> float:
    if not (run_dir / "metrics.csv").exists():
        return float("nan")
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("images_per_s")]
    rows = rows[1:] or rows  # the first window includes warm-up
    return sum(float(r["images_per_s"]) for r in rows) / max(1, len(rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--vae-seconds", type=float, default=120.0)
    ap.add_argument("--seconds", type=float, default=180.0, help="training wall time per diffusion model")
    ap.add_argument("--downsample", type=int, default=8)
    ap.add_argument("--latent-channels", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=100, help="built-in training images per class")
    ap.add_argument("--base-channels", type=int, default=32, help="UNet width of both diffusion models")
    ap.add_argument("--samples", type=int, default=25, help="samples per class for the quality numbers")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps when sampling")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs-dir", default=None)
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)

    from demo_quality import accuracy_by_class, to_float, train_classifier
    from objectives import cnn_features

    from difforge.data.builtin import generate_arrays
    from difforge.codec import load_vae
    from difforge.metrics.fid import fid_from_features
    from difforge.pipeline import Pipeline
    from difforge.modelfile import read_metadata
    from difforge.train.trainer import Trainer

    size = args.image_size
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="latent_bench_"))
    common = dict(runs_dir=str(runs), image_size=size, builtin_per_class=args.per_class, max_steps=10**9,
                  checkpoint_every=10**9, log_every=5, preview_num=4, preview_steps=2, precision="fp32", seed=0)

    # 1. the VAE
    vae_run = Trainer(progress=False, task="vae", network="vae", run="vae", downsample=args.downsample,
                      latent_channels=args.latent_channels, network_options=dict(base_channels=32),
                      batch_size=16, lr=1e-3, max_minutes=args.vae_seconds / 60, **common).fit()
    vae_meta = read_metadata(vae_run.model_file)
    val = vae_meta["vae"]["val"]
    vae_ips = _images_per_s(vae_run.run_dir)
    vae_params = sum(p.numel() for p in load_vae(vae_run.model_file)[0].parameters())
    print(f"# VAE: {vae_run.steps} steps, {vae_ips:.1f} images/s, PSNR {val['val_psnr']:.2f} dB, SSIM {val['val_ssim']:.3f}", flush=True)

    # 2. the judge and the real references
    t0 = time.perf_counter()
    clf, classes = train_classifier(size, 3, per_class=150, epochs=4)
    real, real_labels, _ = generate_arrays(size=size, per_class=args.samples, seed=2, channels=3)
    real_x, real_y = to_float(real), torch.as_tensor(real_labels).long()
    _, real_acc = accuracy_by_class(clf, real_x, real_y, len(classes))
    real_feat = cnn_features(clf, real_x).numpy()
    vae, _ = load_vae(vae_run.model_file)
    with torch.no_grad():
        recon = torch.cat([vae(real_x[i : i + 64])[0].clamp(-1, 1) for i in range(0, len(real_x), 64)])
    _, recon_acc = accuracy_by_class(clf, recon, real_y, len(classes))
    recon_fd = fid_from_features(real_feat, cnn_features(clf, recon).numpy())
    print(f"# classifier: {time.perf_counter() - t0:.0f} s, {real_acc:.0%} on real held-out images", flush=True)

    # 3. pixel vs latent diffusion, equal wall time
    net = dict(base_channels=args.base_channels, num_res_blocks=1, attention_resolutions=[8], head_channels=32)
    models = {
        "pixel": dict(network_options=dict(net, channel_mult=[1, 2, 2, 2])),
        "latent": dict(network_options=dict(net), vae=str(vae_run.model_file), latent=True),  # default levels fit the latent
    }
    rows = []
    for name, settings in models.items():
        result = Trainer(progress=False, run=name, batch_size=32, lr=1e-3, max_minutes=args.seconds / 60, **common, **settings).fit()
        pipe = Pipeline.from_checkpoint(result.model_file, device="cpu", precision="fp32")
        params = sum(p.numel() for p in pipe.net.parameters())
        t1 = time.perf_counter()
        out = pipe.generate(num=args.samples, class_label="all", sampler="ddim", steps=args.steps, cfg=3.0, seed=1000, batch_size=100)
        s_per_image = (time.perf_counter() - t1) / len(out.images)
        x = to_float(out.images)
        _, acc = accuracy_by_class(clf, x, out.labels, len(classes))
        fd = fid_from_features(real_feat, cnn_features(clf, x).numpy())
        shape = "x".join(map(str, pipe.sample_shape))
        rows.append((name, shape, params, result.steps, _images_per_s(result.run_dir), s_per_image, acc, fd))
        print(f"# {name}: {result.steps} steps, acc {acc:.0%}, FD-cnn {fd:.2f}", flush=True)

    print(f"\n{size} px built-in set ({4 * args.per_class} images), {torch.get_num_threads()} thread(s), fp32.")
    print(f"VAE: {args.downsample}x, {args.latent_channels} latent channels, {vae_params / 1e6:.2f}M params, "
          f"{args.vae_seconds:g} s: {vae_run.steps} steps at {vae_ips:.1f} images/s (batch 16); validation PSNR "
          f"{val['val_psnr']:.2f} dB, SSIM {val['val_ssim']:.3f}, MSE {val['val_mse']:.4f}; its reconstructions of real images: "
          f"acc {recon_acc:.0%}, FD-cnn {recon_fd:.2f} (real images: acc {real_acc:.0%}).")
    print(f"Diffusion: {args.seconds:g} s of training each, batch 32; DDIM {args.steps} steps, cfg 3, {args.samples} samples/class.\n")
    print("| model | sampler space | params | steps | train images/s | sample s/image | class acc | FD-cnn |")
    print("|---|---|---|---|---|---|---|---|")
    for name, shape, params, steps, ips, spi, acc, fd in rows:
        print(f"| {name} | {shape} | {params / 1e6:.2f}M | {steps} | {ips:.1f} | {spi:.3f} | {acc:.0%} | {fd:.2f} |")


if __name__ == "__main__":
    main()
