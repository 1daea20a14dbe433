"""The web page in a real headless Chromium against a real uvicorn on 127.0.0.1."""

import pytest

from .cdp import Browser, find_chromium
from .conftest import live_server
from tests.pipeline.conftest import sr_models  # noqa: F401  (the tiny SR model files, for the Upscale tab)


def test_page_generates_two_images(tmp_path, tiny_pipe):
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install -y chromium) - the browser test needs one")
    from difforge.serve import ServeSettings, create_app

    app = create_app({"tiny": tiny_pipe}, ServeSettings(max_steps=50))
    with live_server(app) as url:
        browser = Browser(exe, tmp_path / "profile", tmp_path / "chromium.log")
        try:
            browser.open(url + "/")
            assert browser.wait_for("document.querySelectorAll('#model option').length", timeout=30) == 1, \
                (tmp_path / "chromium.log").read_text()[-2000:]
            assert browser.js("document.querySelector('#class').options.length") == 6  # in turn, 4 classes, all
            assert browser.js("document.querySelector('#token-row').offsetParent === null")  # no token asked for
            browser.type_into("#num", "2")
            browser.type_into("#steps", "2")
            browser.js("document.querySelector('#class').value = 'crack'")
            assert browser.js("document.querySelector('#num').value") == "2"
            browser.click("#generate")
            found = browser.wait_for(
                "(() => { const imgs = [...document.querySelectorAll('#images img')];"
                " return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth === 16) ? imgs.length : 0; })()",
                timeout=60,
            )
            error = browser.js("document.querySelector('#error').hidden ? '' : document.querySelector('#error').textContent")
            assert found == 2, f"page shows no images; error: {error!r}"
            assert error == ""
            assert browser.js("document.querySelector('#progress').value") == 1
            assert not browser.js("document.querySelector('#downloads').hidden")
            names = browser.js("[...document.querySelectorAll('#images a')].map(a => a.download)")
            assert names == ["0000_crack_seed0.png", "0001_crack_seed1.png"]
            assert browser.exceptions() == []
        finally:
            browser.close()


def _upload(browser, selector, path):
    """Choose ``path`` in a file input, as a user picking it would (CDP DOM.setFileInputFiles)."""
    root = browser.send("DOM.getDocument")["root"]["nodeId"]
    node = browser.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    browser.send("DOM.setFileInputFiles", {"files": [str(path)], "nodeId": node})


def _drag(browser, selector, points):
    """Press the left button at points[0] (fractions of the element's box), move through the rest, release."""
    box = browser.js(f"(() => {{ const e = document.querySelector('{selector}'); e.scrollIntoView({{block: 'center'}});"
                     " const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
    xy = [(box[0] + fx * box[2], box[1] + fy * box[3]) for fx, fy in points]
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": xy[0][0], "y": xy[0][1]})
    browser.send("Input.dispatchMouseEvent", {"type": "mousePressed", "x": xy[0][0], "y": xy[0][1], "button": "left", "buttons": 1, "clickCount": 1})
    for x, y in xy[1:]:
        browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "button": "left", "buttons": 1})
    browser.send("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": xy[-1][0], "y": xy[-1][1], "button": "left", "buttons": 0, "clickCount": 1})


def test_inpaint_tab_draws_a_mask_and_gets_an_image(tmp_path, tiny_pipe):
    """Upload a good image, draw a stroke with the mouse, inpaint: the image comes back, equal to the upload outside the mask."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install -y chromium) - the browser test needs one")
    import numpy as np
    from PIL import Image

    from difforge.serve import ServeSettings, create_app

    good = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(good).save(tmp_path / "good.png")
    app = create_app({"tiny": tiny_pipe}, ServeSettings(max_steps=50))
    with live_server(app) as url:
        browser = Browser(exe, tmp_path / "profile", tmp_path / "chromium.log")
        try:
            browser.open(url + "/")
            assert browser.wait_for("document.querySelectorAll('#model option').length", timeout=30) == 1
            browser.click("#inpaint-open")
            _upload(browser, "#inp-file", tmp_path / "good.png")
            assert browser.wait_for("document.querySelector('#inp-canvas').dataset.ready === '1'", timeout=20)
            _drag(browser, "#inp-canvas", [(0.25, 0.3), (0.4, 0.35), (0.6, 0.45), (0.75, 0.5)])
            browser.js("document.querySelector('#inp-class').value = 'scratch'")
            browser.js("document.querySelector('#inp-method').value = 'blend'")
            browser.type_into("#inp-steps", "2")
            browser.type_into("#inp-num", "1")
            browser.click("#inp-generate")
            found = browser.wait_for("(() => { const i = document.querySelector('#inp-results img');"
                                     " return i && i.complete && i.naturalWidth === 16 ? 1 : 0; })()", timeout=60)
            error = browser.js("document.querySelector('#inp-error').hidden ? '' : document.querySelector('#inp-error').textContent")
            assert found == 1, f"no inpainted image; error: {error!r}"
            # the mask that came back is the stroke: white pixels along the drag, and the image keeps the rest
            check = browser.js("""(async () => {
                const load = (src) => new Promise((ok) => { const i = new Image(); i.onload = () => ok(i); i.src = src; });
                const px = async (src) => { const c = document.createElement('canvas'); c.width = c.height = 16;
                    const g = c.getContext('2d'); g.drawImage(await load(src), 0, 0); return g.getImageData(0, 0, 16, 16).data; };
                const mask = await px(document.querySelector('#inp-mask-link').href);
                const made = await px(document.querySelector('#inp-results img').src);
                let white = 0; const keep = [];
                for (let i = 0; i < 256; i++) { if (mask[4 * i] > 127) white++; else keep.push([i, made[4 * i], made[4 * i + 1], made[4 * i + 2]]); }
                return { white, keep, rows: [...new Set([...Array(256).keys()].filter((i) => mask[4 * i] > 127).map((i) => Math.floor(i / 16)))] };
            })()""")
            assert 4 <= check["white"] <= 60, check["white"]
            assert min(check["rows"]) >= 3 and max(check["rows"]) <= 10
            flat = good.reshape(-1, 3)
            assert all(list(flat[i]) == [r, g, b] for i, r, g, b in check["keep"])
            assert browser.js("document.querySelector('#inp-mask-link').download") == "mask.png"
            assert browser.exceptions() == []
        finally:
            browser.close()


def test_upscale_tab_upscales_an_upload(tmp_path, tiny_pipe, sr_models):
    """Open the Upscale tab, upload a 5x3 image, upscale with the regression model: a 20x12 image comes back."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install -y chromium) - the browser test needs one")
    import numpy as np
    from PIL import Image

    from difforge.serve import ServeSettings, create_app
    from difforge.serve.models import load_models

    Image.fromarray(np.random.default_rng(2).integers(0, 255, (3, 5, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    (reg,) = load_models([sr_models["regression"]], device="cpu", precision="fp32").values()
    app = create_app({"tiny": tiny_pipe, "reg": reg}, ServeSettings(max_steps=50))
    with live_server(app) as url:
        browser = Browser(exe, tmp_path / "profile", tmp_path / "chromium.log")
        try:
            browser.open(url + "/")
            assert browser.wait_for("document.querySelectorAll('#model option').length", timeout=30) == 1
            browser.click("#upscale-open")
            assert browser.wait_for("document.querySelectorAll('#up-model option').length", timeout=20) == 1
            _upload(browser, "#up-file", tmp_path / "small.png")
            browser.wait_for("document.querySelector('#up-file').files.length", timeout=10)
            browser.click("#up-go")
            found = browser.wait_for("(() => { const i = document.querySelector('#up-image');"
                                     " return i && i.complete && i.naturalWidth === 20 && i.naturalHeight === 12 ? 1 : 0; })()", timeout=60)
            error = browser.js("document.querySelector('#up-error').hidden ? '' : document.querySelector('#up-error').textContent")
            assert found == 1, f"no upscaled image; error: {error!r}"
            assert browser.exceptions() == []
        finally:
            browser.close()
