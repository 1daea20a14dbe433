"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``: no extra package.

Chromium reads commands from fd 3 and writes answers to fd 4, each a JSON message ended by NUL.
Only what the page test needs: open a tab, evaluate JavaScript, type, click, close.
"""

import json
import os
import select
import shutil
import subprocess
import sys
import time

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--no-default-browser-check",
    "--disable-dev-shm-usage", "--mute-audio", "--remote-debugging-pipe",
]


# dup2 the two pipe ends to fds 3 and 4, then become chromium (the same process, so no helper lingers)
_EXEC_WITH_FDS_3_4 = (
    "import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); os.dup2(r, 3); os.dup2(w, 4); "
    "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])"
)


def _above(fd, low):
    """The same pipe end on a descriptor >= ``low`` (the original closed)."""
    import fcntl

    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    os.close(fd)
    return new


def find_chromium():
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Browser:
    def __init__(self, executable, user_data_dir, log_path, timeout=30.0):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # keep the child's ends away from 3 and 4, so moving them there cannot clobber one another
        to_chrome_r, from_chrome_w = (_above(fd, 10) for fd in (to_chrome_r, from_chrome_w))
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_FDS_3_4, str(to_chrome_r), str(from_chrome_w), executable, *FLAGS,
             f"--user-data-dir={user_data_dir}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.timeout = timeout
        self._buf = b""
        self._next_id = 0
        self.session = None
        self.events = []

    # -- protocol ----------------------------------------------------------------------------
    def send(self, method, params=None, session=True, timeout=None):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
            del self.events[:-200]

    def _read(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("no answer from chromium in time")
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise CDPError("chromium closed the pipe (did it crash? see its log)")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    # -- what the test does ------------------------------------------------------------------
    def open(self, url):
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        self.send("Runtime.enable")
        self.send("Page.navigate", {"url": url})

    def js(self, expression):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise CDPError(f"{expression}: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def wait_for(self, expression, timeout=30.0, interval=0.1):
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                return value
            time.sleep(interval)

    def type_into(self, selector, text):
        """Focus a field, clear it and type ``text`` as keyboard input."""
        self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); e.select(); return true; }})()")
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8})
        self.send("Input.insertText", {"text": text})

    def click(self, selector):
        """A real left click in the middle of the element."""
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})

    def exceptions(self):
        return [e["params"]["exceptionDetails"].get("text") for e in self.events if e.get("method") == "Runtime.exceptionThrown"]

    def close(self):
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", session=False, timeout=5)
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
