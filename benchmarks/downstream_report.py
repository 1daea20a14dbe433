"""benchmarks/downstream.py's outputs: the markdown table and a grouped bar chart PNG drawn with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = [(90, 90, 90), (66, 133, 244), (52, 168, 83), (251, 188, 5), (234, 67, 53), (155, 89, 182)]


def mean_std(values) -> tuple:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def table(results: dict, metrics, seconds: dict) -> str:
    """results[condition][metric] = list over seeds -> markdown, mean +- std in points (x100)."""
    head = "| training set | " + " | ".join(label for _, label in metrics) + " | train s (seg + clf) |"
    rows = [head, "|---" * (head.count("|") - 1) + "|"]
    for cond, per in results.items():
        cells = []
        for key, _ in metrics:
            m, s = mean_std(per[key])
            cells.append(f"{100 * m:.1f} +- {100 * s:.1f}")
        rows.append(f"| {cond} | " + " | ".join(cells) + f" | {np.mean(seconds[cond]):.0f} |")
    return "\n".join(rows)


def bar_chart(results: dict, metrics, path: Path, title: str) -> Path:
    """Groups = metrics, bars = training sets, whiskers = +- std over seeds; y from 0 to 100."""
    w, h, left, bottom, top = 900, 420, 50, 40, 40
    conds = list(results)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    plot_h = h - top - bottom - 60
    y = lambda v: top + plot_h * (1 - v)  # noqa: E731
    for t in range(0, 101, 20):
        d.line([(left, y(t / 100)), (w - 10, y(t / 100))], fill=(225, 225, 225))
        d.text((8, y(t / 100) - 6), f"{t}", fill="black", font=font)
    group = (w - left - 20) / len(metrics)
    bar = group * 0.8 / len(conds)
    for g, (key, label) in enumerate(metrics):
        x0 = left + g * group + group * 0.1
        for k, cond in enumerate(conds):
            m, s = mean_std(results[cond][key])
            xa = x0 + k * bar
            d.rectangle([xa, y(max(m, 0)), xa + bar - 3, y(0)], fill=COLOURS[k % len(COLOURS)])
            xc = xa + bar / 2 - 1.5
            d.line([(xc, y(min(1, m + s))), (xc, y(max(0, m - s)))], fill="black", width=1)
            for v in (m + s, m - s):
                d.line([(xc - 3, y(min(1, max(0, v)))), (xc + 3, y(min(1, max(0, v))))], fill="black")
        d.text((x0 + group * 0.3, y(0) + 6), label, fill="black", font=font)
    d.text((left, 10), title, fill="black", font=font)
    for k, cond in enumerate(conds):
        lx, ly = left + (k % 3) * 280, h - 50 + (k // 3) * 18
        d.rectangle([lx, ly, lx + 12, ly + 12], fill=COLOURS[k % len(COLOURS)])
        d.text((lx + 18, ly), cond, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def samples_grid(synth_dir: Path, path: Path, n: int = 16, scale: int = 3) -> Path:
    """Row 1: synthetic images of ``synth_dir/<type>/images`` (every type), row 2: their masks; enlarged ``scale`` x."""
    files = sorted(synth_dir.glob("*/images/*.png"))
    files = files[:: max(1, len(files) // n)][:n]
    imgs = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    masks = [np.asarray(Image.open(p.parent.parent / "masks" / p.name).convert("RGB")) for p in files]
    grid = np.concatenate([np.concatenate(imgs, 1), np.concatenate(masks, 1)], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)
    return path
