"""Where in the image does a model denoise badly? A per-pixel map of its held-out denoising error.

For real images the model never trained on (the built-in defect set of another seed, or ``--data``:
a class-folder dataset), this noises each image at several timesteps, asks the model for x0 and
averages the squared error per pixel (over images, channels and timesteps). It prints the error of
each corner block and of the border against the image's mean, and writes the map as a PNG.

It also prints the largest "droplet": over every 4-D activation inside the network, the norm over
channels of the most extreme pixel against the median pixel (averaged over the images; ~1-3 is
normal). Why: a 64 px defect model had coloured specks in the same corner of every sample, its
error there was 5-10x the mean, and its last decoder blocks carried a corner activation 31x the
median -- GroupNorm's droplet (StyleGAN2, Karras et al. 2020, sec. 2): one huge pixel sets how the
whole map is normalised. A distance between image sets shows that something is wrong; this shows
where.

``--levels PNG`` draws what the model makes of one real image per class at each of :data:`LEVEL_SIGMAS`
(its one-step x0 prediction from the noised image; first column the image itself). Why: a 64 px defect
model that drew "wormy" cells for wood grain already turned the real grain into cells at sigma 0.6,
so the texture is lost in the denoiser at middle noise, not by the sampler.

    python benchmarks/error_map.py runs/NAME/checkpoints/ema.safetensors                  # built-in defects, seed 5
    python benchmarks/error_map.py MODEL --data my_folder --out errmap.png --levels levels.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from difforge.data.builtin import generate_arrays
from difforge.diffusion.denoiser import to_eps_x0
from difforge.diffusion.schedule import sigma_to_t, vp_coefs_at
from difforge.pipeline import Pipeline

TIMESTEP_FRACTIONS = (0.05, 0.2, 0.4, 0.6, 0.8)
LEVEL_SIGMAS = (0.2, 0.6, 1.5, 4.0)  # the noise levels (VE sigma) of the --levels sheet


def real_batch(pipe: Pipeline, data, per_class: int):
    """(x0 in [-1, 1] (N, C, H, W), labels or None) of held-out real images at the model's size."""
    size, channels = pipe.image_size, pipe.channels
    if data:
        from difforge.data.folder import load_folder
        from difforge.data.scan import scan_folder

        loaded = load_folder(scan_folder(data), size, channels, progress=False)
        x, names = loaded.images, loaded.class_names
        labels = loaded.labels
    else:
        arr, labels, names = generate_arrays(size=size, per_class=per_class, seed=5, channels=channels)
        x, labels = torch.from_numpy(arr).permute(0, 3, 1, 2), torch.from_numpy(labels)
    x = x.float() / 127.5 - 1
    if not pipe.class_names:
        return x, None
    index = [pipe.class_names.index(n) for n in names]
    return x, torch.as_tensor([index[int(i)] for i in labels])


@torch.no_grad()
def error_map(pipe: Pipeline, x0: torch.Tensor, y, seed: int = 0) -> torch.Tensor:
    """(H, W) mean squared x0 error of ``pipe``'s network on ``x0`` noised at :data:`TIMESTEP_FRACTIONS`."""
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(x0.shape[-2:])
    steps = pipe.schedule.num_steps
    for f in TIMESTEP_FRACTIONS:
        pred = predict_x0(pipe, x0, y, torch.full((len(x0),), float(int(f * (steps - 1)))), g)
        total += (pred - x0).square().mean((0, 1))
    return total / len(TIMESTEP_FRACTIONS)


@torch.no_grad()
def predict_x0(pipe: Pipeline, x0: torch.Tensor, y, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The network's one-step x0 prediction for ``x0`` noised (noise from ``g``) at timesteps ``t`` (B,)."""
    eps = torch.randn(x0.shape, generator=g)
    a, s = vp_coefs_at(pipe.schedule, t, x0)
    x_t = a * x0 + s * eps
    out = torch.cat([pipe.net(x_t[i : i + 64], t[i : i + 64], None if y is None else y[i : i + 64]) for i in range(0, len(x0), 64)])
    return to_eps_x0(pipe.target, out.float()[:, : x0.shape[1]], x_t, a, s)[1]


def level_sheet(pipe: Pipeline, x0: torch.Tensor, y, seed: int = 0) -> np.ndarray:
    """(H', W', C) uint8: one real image per class (rows; the first images without classes), then its x0
    prediction from each noise level of :data:`LEVEL_SIGMAS` (columns), 2 px white gaps."""
    rows = [int((y == c).nonzero()[0]) for c in y.unique().tolist()] if y is not None else list(range(min(4, len(x0))))
    x, labels = x0[rows], None if y is None else y[rows]
    g = torch.Generator().manual_seed(seed)
    cols = [x] + [predict_x0(pipe, x, labels, sigma_to_t(pipe.schedule, torch.full((len(x),), s)).float(), g) for s in LEVEL_SIGMAS]
    tiles = torch.stack(cols, 1).clamp(-1, 1).add(1).mul(127.5).round().byte()  # (rows, cols, C, H, W)
    tiles = torch.nn.functional.pad(tiles, (0, 2, 0, 2), value=255).permute(0, 3, 1, 4, 2)  # (rows, H, cols, W, C)
    r, h, c, w, ch = tiles.shape
    return tiles.reshape(r * h, c * w, ch).numpy()


@torch.no_grad()
def largest_droplet(pipe: Pipeline, x0: torch.Tensor, y, t_fraction: float = 0.4):
    """(ratio, module name, (row, col)): the network activation whose most extreme pixel (norm over
    channels, mean over images) is furthest above its median pixel, for ``x0`` noised at ``t_fraction``."""
    found = []

    def hook(name):
        def record(module, args, out):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[0] == len(x0) and min(out.shape[-2:]) > 1:
                n = out.float().norm(dim=1).mean(0)
                row, col = divmod(int(n.argmax()), n.shape[1])
                found.append((float(n.max() / n.median()), name, (row, col)))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in pipe.net.named_modules() if name]
    t = torch.full((len(x0),), int(t_fraction * (pipe.schedule.num_steps - 1)))
    a, s = vp_coefs_at(pipe.schedule, t, x0)
    try:
        pipe.net(a * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), t, y)
    finally:
        for h in handles:
            h.remove()
    return max(found)


def regions(err: torch.Tensor) -> dict:
    """Error of each corner block (1/16 of the side) and of the border ring, over the map's mean."""
    h, w = err.shape
    k = max(1, h // 16)
    mean = float(err.mean())
    ring = torch.ones_like(err, dtype=torch.bool)
    ring[k:-k, k:-k] = False
    return {"top left": float(err[:k, :k].mean()) / mean, "top right": float(err[:k, -k:].mean()) / mean,
            "bottom left": float(err[-k:, :k].mean()) / mean, "bottom right": float(err[-k:, -k:].mean()) / mean,
            "border": float(err[ring].mean()) / mean}


def save_heatmap(err: torch.Tensor, path: Path, scale: int = 4) -> None:
    """The map as a PNG: black = no error, white = the largest (nearest-neighbour enlarged)."""
    from PIL import Image

    v = (err / err.max()).clamp(0, 1).numpy()
    Image.fromarray((v * 255).astype(np.uint8)).resize((v.shape[1] * scale, v.shape[0] * scale), Image.NEAREST).save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model files")
    ap.add_argument("--data", default=None, help="a class-folder dataset of real images (default: the built-in set, seed 5)")
    ap.add_argument("--per-class", type=int, default=25, help="built-in images per class")
    ap.add_argument("--out", default=None, help="write the first model's map here (PNG)")
    ap.add_argument("--levels", default=None, help="write the first model's noise-level sheet here (PNG): a real image per class, "
                    "then the model's x0 from it noised at sigma " + " / ".join(f"{v:g}" for v in LEVEL_SIGMAS))
    args = ap.parse_args()
    print("| model | top left | top right | bottom left | bottom right | border | mean error | largest droplet |")
    print("|---|---|---|---|---|---|---|---|")
    for i, path in enumerate(args.models):
        pipe = Pipeline.from_checkpoint(path, device="cpu", precision="fp32")
        x0, y = real_batch(pipe, args.data, args.per_class)
        err = error_map(pipe, x0, y)
        r = regions(err)
        ratio, where, pixel = largest_droplet(pipe, x0[:64], None if y is None else y[:64])
        print(f"| {path} | " + " | ".join(f"{v:.2f}" for v in r.values()) + f" | {float(err.mean()):.4f} | {ratio:.1f}x ({where} {pixel}) |",
              flush=True)
        if args.out and i == 0:
            save_heatmap(err, Path(args.out))
        if args.levels and i == 0:
            from PIL import Image

            sheet = level_sheet(pipe, x0, y)
            Image.fromarray(sheet[..., 0] if sheet.shape[-1] == 1 else sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(args.levels)


if __name__ == "__main__":
    main()
