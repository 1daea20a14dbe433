"""report.html: one self-contained page with real PNG charts, every preview, eval numbers and the model."""

import base64
import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from difforge.cli.main import main
from difforge.data.io import save_image
from difforge.train.logging import MetricsCSV
from difforge.train.plots import Line, line_chart, nice_ticks, smooth
from difforge.train.report import previews, write_report
from tests.export.runkit import train_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    src = train_tiny_run(tmp_path_factory.mktemp("report_src"))
    run = tmp_path_factory.mktemp("report") / "t"
    shutil.copytree(src, run)
    log = MetricsCSV(run / "metrics.csv")
    for step, fid in ((4, 80.0), (8, 60.5), (12, 70.0)):  # evaluation rows, as --eval-every writes them
        log.log({"step": step, "fid": fid, "kid": fid / 1000})
    for name in ("scratch", "crack"):  # what `difforge sample --grid` leaves in samples/ema/
        save_image(np.full((36, 36, 3), 120, np.uint8), run / "samples" / "ema" / f"grid_{name}.png")
    return run


def embedded(html):
    """{caption: PIL image} of every <figure> in the page."""
    out = {}
    for uri, caption in re.findall(r'<figure[^>]*><img src="data:image/[a-z]+;base64,([^"]+)"[^>]*><figcaption>([^<]+)', html):
        out[caption] = Image.open(io.BytesIO(base64.b64decode(uri)))
    return out


def test_report_is_self_contained_with_charts_previews_and_eval(run):
    path = write_report(run)
    assert path == run / "report.html"
    html = path.read_text()
    assert "<script" not in html and not re.search(r'src="(https?:|//|file:)', html)
    figs = embedded(html)
    loss = figs["Training loss"]
    assert loss.format == "PNG" and loss.size == (720, 340)
    assert loss.convert("L").getextrema()[0] < 100  # something dark was drawn: axes, text, lines
    assert {"Learning rate", "Throughput", "Evaluation: fid", "Evaluation: kid"} <= set(figs)
    # every preview, in step order, as a real image
    pv = previews(run)
    assert [s for s, _ in pv] == [4, 8, 12]
    positions = [html.index(f'id="step-{s}"') for s, _ in pv]
    assert positions == sorted(positions)
    for s, p in pv:
        assert figs[f"step {s} · {p.name}"].size == Image.open(p).size
    # evaluation table and best metric; final per-class grids; the model file; the config
    assert "<th>fid</th>" in html and "fid 60.5 at step 8" in html
    assert "Final samples per class" in html and {"scratch", "crack"} <= set(figs)
    assert "unet-tiny (base_channels=16" in html and "4: scratch, inclusion, crack, patch" in html
    assert "max_steps: 12" in html
    assert 'class="state finished"' in html


def test_cli_report_and_errors(run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert out.exists() and "report:" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_report_of_a_run_without_rows_yet(tmp_path):
    run = tmp_path / "young"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  max_steps: 10\n")
    html = write_report(run).read_text()
    assert "metrics.csv has no rows yet" in html and "No model file yet" in html


def test_chart_helpers():
    assert nice_ticks(0, 1, 6) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 997, 7) == [200, 400, 600, 800]
    assert smooth([1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0]  # debiased: no pull toward 0 at the start
    s = smooth([0.0] * 50 + [1.0] * 50)
    assert s[49] == 0 and 0 < s[60] < 1 and s[-1] > 0.9
    img = line_chart([Line("a", [1, 2, 3], [1e-4, 1e-2, 1.0])], title="t", ylabel="y")
    assert img.size == (720, 340)
    assert line_chart([], title="empty").size == (720, 340)
