"""``runs/NAME/report.html``: a whole training run on one self-contained page.

One HTML file with every image inside it (base64 ``data:`` URIs), no script and no network
access, so it can be mailed or opened from a USB stick: the run's state and timing, loss curves
per logged term (raw values light, smoothed on top) and the learning rate as PNG charts drawn
with Pillow (:mod:`difforge.train.plots`), evaluation numbers (FID/KID/...) as a table and a
chart, the preview grids in step order, the final per-class sample grids of ``difforge sample
--grid``, the model file's description, the config and the last session's log.

``write_report(run_dir)`` is called by ``difforge report`` and at the end of training.
"""

from __future__ import annotations

import base64
import glob
import html
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..atomic import write_text
from ..errors import UserError
from ..export.runinfo import MODEL_FILE, RunMetrics, model_description, read_log, summarize_meta
from .plots import PALETTE, Line, line_chart, png_bytes, smooth
from .runs import format_duration, is_run, summarize

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif"}
_STEP = re.compile(r"^step_(\d+)$")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;color:#222}
h1{margin:.2em 0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600}
.finished{background:#2a8a3e}.running{background:#1f6fb4}.interrupted,.stopped{background:#c77800}.broken{background:#b52a2a}
figure{display:inline-block;margin:6px 10px 10px 0;vertical-align:top}figcaption{font-size:12px;color:#555;text-align:center}
img.pix{image-rendering:pixelated}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px;max-height:480px}
.muted{color:#777}
"""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(data: bytes, mime: str, alt: str, width: Optional[int] = None, pixelated: bool = False) -> str:
    w = f' width="{width}"' if width else ""
    cls = ' class="pix"' if pixelated else ""
    return f'<img src="{_data_uri(data, mime)}" alt="{html.escape(alt)}"{w}{cls}>'


def _file_img(path: Path, alt: str, min_width: int = 256) -> str:
    """An image file embedded; small previews are shown enlarged with sharp pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w = im.width
    except OSError:
        return f'<p class="muted">{html.escape(path.name)}: unreadable image</p>'
    width = min_width if w < min_width else None
    return _img(path.read_bytes(), IMAGE_TYPES[path.suffix.lower()], alt, width, pixelated=width is not None)


def previews(run_dir) -> List[Tuple[int, Path]]:
    """``samples/step_NNNNNNN.*`` as (step, path), in step order."""
    out = []
    for p in (Path(run_dir) / "samples").glob("step_*"):
        m = _STEP.match(p.stem)
        if m and p.suffix.lower() in IMAGE_TYPES and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def final_grids(run_dir) -> Dict[str, List[Path]]:
    """Per-class grids written by ``difforge sample --grid`` beside ``samples/<model>/`` (``<model>-grid*``;
    older versions wrote them inside): folder -> grids."""
    out: Dict[str, List[Path]] = {}
    for folder in sorted(p for p in (Path(run_dir) / "samples").glob("*") if p.is_dir()):
        found = [*folder.parent.glob(f"{glob.escape(folder.name)}-grid*"), *folder.glob("grid*")]
        grids = sorted(p for p in found if p.suffix.lower() in IMAGE_TYPES)
        if grids:
            out[folder.name] = grids
    return out


def charts(m: RunMetrics) -> List[Tuple[str, bytes]]:
    """(title, PNG bytes): one chart per loss term, the learning rate, throughput, evaluation."""
    out = []
    for i, term in enumerate(m.loss_terms):
        xs, ys = zip(*m.train[term])
        color = PALETTE[i % len(PALETTE)]
        lines = [Line(f"{term} (raw)", xs, ys, color, 1.0, faded=True), Line(f"{term} (smoothed)", xs, smooth(ys), color, 2.0)]
        out.append((f"Training {term}", png_bytes(line_chart(lines, title=f"Training {term}", ylabel=term))))
    if m.train.get("lr"):
        xs, ys = zip(*m.train["lr"])
        out.append(("Learning rate", png_bytes(line_chart([Line("lr", xs, ys, PALETTE[2])], title="Learning rate", ylabel="lr", log_y=False))))
    if m.train.get("images_per_s"):
        xs, ys = zip(*m.train["images_per_s"])
        lines = [Line("raw", xs, ys, PALETTE[4], 1.0, faded=True), Line("smoothed", xs, smooth(ys), PALETTE[4])]
        out.append(("Throughput", png_bytes(line_chart(lines, title="Throughput", ylabel="images / s", log_y=False))))
    ev = [k for k in m.eval if not k.endswith("_std") and len(m.eval[k]) > 1]
    for i, name in enumerate(ev):
        xs, ys = zip(*m.eval[name])
        out.append((f"Evaluation: {name}", png_bytes(line_chart([Line(name, xs, ys, PALETTE[(i + 1) % len(PALETTE)], 2.0)],
                                                                  title=f"Evaluation: {name}", ylabel=name, log_y=False))))
    return out


def _table(rows: List[Tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _summary(s, m: RunMetrics, config: dict) -> str:
    tc = config.get("train", {}) if isinstance(config.get("train"), dict) else {}
    rows = [("state", f'<span class="state {s.state}">{s.state}</span>' + (f" {html.escape(s.note)}" if s.note else "")),
            ("steps", f"{s.steps}" + (f" of {s.total_steps}" if s.total_steps else "")),
            ("epochs", f"{m.last('epoch'):.2f}" if m.last("epoch") is not None else "-"),
            ("last loss", f"{s.last_loss:.5g}" if s.last_loss is not None else "-")]
    if s.best:
        rows.append(("best metric", f"{html.escape(s.best[0])} {s.best[1]:.5g} at step {s.best[2]}"))
    return _table(rows) + _timing(s, m, tc)


def _timing(s, m: RunMetrics, tc: dict) -> str:
    log = read_log(s.path)
    rows = [("training time", format_duration(s.elapsed_s))]
    if s.elapsed_s and s.steps:
        rows.append(("per step", f"{s.elapsed_s / max(s.steps, 1):.3f} s"))
    ips = [v for _, v in m.train.get("images_per_s", [])]
    if ips:
        tail = ips[len(ips) // 2:]  # the first rows include start-up
        rows.append(("throughput", f"{sum(tail) / len(tail):.1f} images/s (mean of the second half)"))
    if tc.get("max_minutes"):
        rows.append(("time budget", f"{tc['max_minutes']} min" + (f" ({s.elapsed_s / 60 / tc['max_minutes']:.0%} used)" if s.elapsed_s else "")))
    if log.started:
        rows.append(("last session", f"{log.started} .. {log.last_time}"))
    return "<h3>Timing</h3>" + _table([(k, html.escape(v)) for k, v in rows])


def _eval_table(m: RunMetrics) -> str:
    names = [k for k in m.eval]
    steps = sorted({st for k in names for st, _ in m.eval[k]})
    head = "<tr><th>step</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    body = ""
    for st in steps:
        cells = "".join(f'<td class="num">{dict(m.eval[n]).get(st, float("nan")):.5g}</td>' for n in names)
        body += f'<tr><td class="num">{st}</td>{cells}</tr>'
    return f"<table>{head}{body}</table>"


def _model_section(run: Path) -> str:
    path = run / MODEL_FILE
    if not path.exists():
        return '<p class="muted">No model file yet (checkpoints/ema.safetensors is written at the first checkpoint).</p>'
    try:
        meta = model_description(path)
    except UserError as e:
        return f'<p class="muted">{html.escape(str(e))}</p>'
    rows = [(k, html.escape(v)) for k, v in summarize_meta(meta)]
    rows.append(("file", f"{html.escape(str(path))} ({path.stat().st_size / 1e6:.1f} MB)"))
    return _table(rows) + f"<p>Sample from it: <code>difforge sample {html.escape(str(path))} --grid</code></p>"


def render(run_dir) -> str:
    """The report page of ``run_dir`` as an HTML string."""
    run = Path(run_dir)
    if not is_run(run):
        raise UserError(f"{run} is not a run folder (expected config.yaml, metrics.csv or log.txt from `difforge train`)")
    s = summarize(run)
    m = s.metrics
    from ..export.runinfo import read_config

    try:
        config = read_config(run)
    except UserError:
        config = {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>difforge run {html.escape(s.name)}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>Run {html.escape(s.name)}</h1><p class='muted'>{html.escape(str(run.resolve()))}</p>",
             "<h2>Summary</h2>", _summary(s, m, config)]
    parts.append("<h2>Training curves</h2>")
    figs = charts(m)
    if figs:
        parts += [f"<figure>{_img(png, 'image/png', title)}<figcaption>{html.escape(title)}</figcaption></figure>" for title, png in figs]
    else:
        parts.append('<p class="muted">metrics.csv has no rows yet.</p>')
    if m.eval:
        parts += ["<h2>Evaluation</h2>", _eval_table(m)]
    parts.append("<h2>Previews over training</h2>")
    pv = previews(run)
    if pv:
        parts.append(f"<p>{len(pv)} preview grids (EMA weights; one row per class for a conditional model).</p>")
        parts += [f'<figure id="step-{st}">{_file_img(p, f"step {st}")}<figcaption>step {st} · {html.escape(p.name)}</figcaption></figure>'
                  for st, p in pv]
    else:
        parts.append('<p class="muted">No previews (samples/step_*.png; set --preview-every).</p>')
    grids = final_grids(run)
    if grids:
        parts.append("<h2>Final samples per class</h2>")
        for folder, paths in grids.items():
            parts.append(f"<h3>samples/{html.escape(folder)}</h3>")
            parts += [f"<figure>{_file_img(p, p.stem)}<figcaption>{html.escape(p.stem.removeprefix(folder + '-').replace('grid_', '').replace('grid', 'all'))}</figcaption></figure>"
                      for p in paths]
    parts += ["<h2>Model file</h2>", _model_section(run)]
    cfg_path = run / "config.yaml"
    cfg_text = cfg_path.read_text(encoding="utf-8", errors="replace") if cfg_path.exists() else "(config.yaml missing)"
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(cfg_text)}</pre>"]
    log = read_log(run)
    if log.lines:
        parts += ["<h2>Log (last session)</h2>", f"<pre>{html.escape(chr(10).join(log.lines[-200:]))}</pre>"]
    parts.append("<p class='muted'>Written by difforge report; self-contained (every image is embedded).</p></body></html>")
    return "\n".join(parts)


def write_report(run_dir, out=None) -> Path:
    """Write ``run_dir/report.html`` (or ``out``) and return its path."""
    out = Path(out) if out else Path(run_dir) / "report.html"
    return write_text(out, render(run_dir))


__all__ = ["charts", "final_grids", "previews", "render", "write_report"]
