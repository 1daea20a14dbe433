"""Line charts drawn with Pillow (no matplotlib): axes, "nice" ticks, grid, labels and a legend.

Drawn at twice the size and downsampled, so lines and text are anti-aliased. Used by the run
report for the loss curves (raw and smoothed) and the learning rate.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
SS = 2  # supersampling factor


@dataclass
class Line:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: Tuple[int, int, int] = PALETTE[0]
    width: float = 2.0
    faded: bool = False  # drawn lighter (raw values under a smoothed curve)
    legend: bool = True


def smooth(values: Sequence[float], weight: Optional[float] = None) -> List[float]:
    """Debiased exponential moving average (TensorBoard's smoothing). ``weight`` defaults to one
    that suits the length: 0.6 for 20 points, 0.95 for 160 or more."""
    n = len(values)
    if weight is None:
        weight = min(0.95, max(0.0, 1.0 - 8.0 / max(n, 1)))
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(acc / norm if norm else v)
    return out


def nice_ticks(lo: float, hi: float, n: int = 6) -> List[float]:
    """About ``n`` round tick values (steps of 1, 2 or 5 x 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def fmt(v: float) -> str:
    """A short tick label: 1200 -> 1.2k, 0.00012 -> 1.2e-04, 0.25 -> 0.25."""
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


def _font(px: int):
    try:
        return ImageFont.load_default(size=px)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, AttributeError):
        return ImageFont.load_default()


def _fade(c: Tuple[int, int, int], amount: float = 0.65) -> Tuple[int, int, int]:
    return tuple(int(v + (255 - v) * amount) for v in c)  # type: ignore[return-value]


def line_chart(lines: Sequence[Line], title: str = "", xlabel: str = "step", ylabel: str = "",
               size: Tuple[int, int] = (720, 340), log_y: Optional[bool] = None) -> Image.Image:
    """A line chart as an RGB image of ``size``. ``log_y`` None: a log axis when every value is
    positive and they span more than a factor of 30."""
    W, H = size[0] * SS, size[1] * SS
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f_small, f_title = _font(11 * SS), _font(14 * SS)
    pts = [(x, y) for ln in lines for x, y in zip(ln.xs, ln.ys) if math.isfinite(x) and math.isfinite(y)]
    left, right, top, bottom = 72 * SS, 16 * SS, 30 * SS, 44 * SS
    px0, px1, py0, py1 = left, W - right, top, H - bottom
    if title:
        d.text((W // 2, 8 * SS), title, fill="black", font=f_title, anchor="mt")
    d.rectangle([px0, py0, px1, py1], outline=(60, 60, 60), width=SS)
    if not pts:
        d.text(((px0 + px1) // 2, (py0 + py1) // 2), "no data yet", fill=(120, 120, 120), font=f_small, anchor="mm")
        return img.resize(size, Image.LANCZOS)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if log_y is None:
        log_y = min(ys) > 0 and max(ys) / min(ys) > 30
    ty = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    tys = [ty(v) for v in ys if v > 0 or not log_y]
    y_lo, y_hi = min(tys), max(tys)
    pad = (y_hi - y_lo) * 0.05 or (abs(y_hi) * 0.1 or 1.0)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def X(x: float) -> float:
        return px0 + (x - x_lo) / (x_hi - x_lo) * (px1 - px0)

    def Y(v: float) -> float:
        return py1 - (ty(v) - y_lo) / (y_hi - y_lo) * (py1 - py0)

    # grid, ticks and tick labels
    for x in nice_ticks(x_lo, x_hi, 7):
        if x_lo <= x <= x_hi:
            gx = X(x)
            d.line([(gx, py0), (gx, py1)], fill=(232, 232, 232), width=SS)
            d.line([(gx, py1), (gx, py1 + 5 * SS)], fill=(60, 60, 60), width=SS)
            d.text((gx, py1 + 7 * SS), fmt(x), fill="black", font=f_small, anchor="mt")
    if log_y:
        yticks = [10.0 ** k for k in range(math.floor(y_lo), math.ceil(y_hi) + 1)]
        if len(yticks) <= 3:
            yticks = sorted(m * t for t in yticks for m in (1, 2, 5))
    else:
        yticks = nice_ticks(y_lo, y_hi, 6)
    for v in yticks:
        if (v > 0 or not log_y) and y_lo <= ty(v) <= y_hi:
            gy = Y(v)
            d.line([(px0, gy), (px1, gy)], fill=(232, 232, 232), width=SS)
            d.line([(px0 - 5 * SS, gy), (px0, gy)], fill=(60, 60, 60), width=SS)
            d.text((px0 - 7 * SS, gy), fmt(v), fill="black", font=f_small, anchor="rm")
    d.rectangle([px0, py0, px1, py1], outline=(60, 60, 60), width=SS)
    d.text(((px0 + px1) // 2, H - 6 * SS), xlabel, fill="black", font=f_small, anchor="mb")
    if ylabel:
        label = ylabel + (" (log scale)" if log_y else "")
        tw = int(d.textlength(label, font=f_small)) + 4 * SS
        tmp = Image.new("RGB", (tw, 16 * SS), "white")
        ImageDraw.Draw(tmp).text((2 * SS, 1 * SS), label, fill="black", font=f_small)
        rot = tmp.rotate(90, expand=True)
        img.paste(rot, (4 * SS, int((py0 + py1) / 2 - rot.height / 2)))

    # the lines: faded (raw) first, then the rest on top
    for ln in sorted(lines, key=lambda ln: not ln.faded):
        color = _fade(ln.color) if ln.faded else ln.color
        seg: List[Tuple[float, float]] = []
        for x, y in list(zip(ln.xs, ln.ys)) + [(math.nan, math.nan)]:
            if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y):
                seg.append((X(x), Y(y)))
                continue
            if len(seg) == 1:
                cx, cy = seg[0]
                r = ln.width * SS
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
            elif seg:
                d.line(seg, fill=color, width=max(1, int(ln.width * SS)), joint="curve")
            seg = []

    # legend, top right
    shown = [ln for ln in lines if ln.legend]
    if len(shown) > 1:  # one line: the title names it
        row = 16 * SS
        lw = max(int(d.textlength(ln.label, font=f_small)) for ln in shown) + 34 * SS
        lx1, ly0 = px1 - 8 * SS, py0 + 8 * SS
        lx0, ly1 = lx1 - lw, ly0 + row * len(shown) + 6 * SS
        d.rectangle([lx0, ly0, lx1, ly1], fill="white", outline=(180, 180, 180), width=SS)
        for i, ln in enumerate(shown):
            cy = ly0 + 3 * SS + row * i + row // 2
            d.line([(lx0 + 6 * SS, cy), (lx0 + 24 * SS, cy)], fill=_fade(ln.color) if ln.faded else ln.color, width=int(2.5 * SS))
            d.text((lx0 + 28 * SS, cy), ln.label, fill="black", font=f_small, anchor="lm")
    return img.resize(size, Image.LANCZOS)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


__all__ = ["Line", "PALETTE", "line_chart", "nice_ticks", "png_bytes", "smooth", "fmt"]
