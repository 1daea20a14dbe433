"""The web page in a real headless Chromium against a real uvicorn on 127.0.0.1."""

import pytest

from .cdp import Browser, find_chromium
from .conftest import live_server


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
