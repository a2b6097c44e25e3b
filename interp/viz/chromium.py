"""Headless Chromium over the DevTools protocol, for tests, benchmarks and screenshots.

No extra dependency: Chromium is started with ``--remote-debugging-pipe`` and spoken to over two
pipes (file descriptors 3 and 4 in the child, one JSON message per NUL-terminated frame), so there
is no port, no websocket and nothing reachable from outside the process.

>>> with Browser() as browser:
...     page = browser.load("feature_browser.html")
...     page.console_errors, page.dialogs, page.ready_ms
...     png = browser.screenshot()
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Browser", "BrowserError", "PageLoad", "find_chromium"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome-error:", "devtools:")


class BrowserError(RuntimeError):
    """Chromium could not be started, or did not answer in time."""


def find_chromium() -> str | None:
    """The Chromium executable: ``$MECHSCOPE_CHROMIUM``, else the first of chromium,
    chromium-browser, google-chrome on the PATH; None when there is none."""
    env = os.environ.get("MECHSCOPE_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageLoad:
    """What happened while a page loaded."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    """Uncaught exceptions, ``console.error`` calls and error-level log entries (failed loads...)."""
    dialogs: list[str] = field(default_factory=list)
    """Messages of ``alert``/``confirm``/``prompt`` dialogs that opened (each was dismissed)."""
    requests: list[str] = field(default_factory=list)
    """URLs the page asked for that are not local (``file:``, ``data:``, ...): network access."""
    wall_ms: float = 0.0
    """From the navigate command to the page's ready signal (or load event), measured here."""
    ready_ms: float | None = None
    """``window.mechscopeReady``: milliseconds from navigation start to the page's first full
    render, by the page's own clock; None for a page that does not set it."""


class Browser:
    """One headless Chromium process; :meth:`load` opens a page in a fresh tab."""

    def __init__(
        self,
        executable: str | None = None,
        *,
        width: int = 1280,
        height: int = 900,
        timeout: float = 30.0,
    ):
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError(
                "no Chromium found: install it (Debian: apt-get install -y chromium) or set "
                "MECHSCOPE_CHROMIUM to the executable"
            )
        self.executable, self.width, self.height, self.timeout = exe, width, height, timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile: str | None = None
        self._next_id = 0
        self._buf = b""
        self._events: list[dict[str, Any]] = []
        self._session: str | None = None
        self._target: str | None = None

    # ---- process -------------------------------------------------------------------------------
    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="mechscope-chromium-")
        to_child_r, self._to_child = os.pipe()  # chromium reads commands on fd 3
        self._from_child, from_child_w = os.pipe()  # and writes replies and events on fd 4

        def wire_fds() -> None:  # runs in the child between fork and exec
            r, w = os.dup(to_child_r), os.dup(from_child_w)  # out of the way of 3 and 4 first
            os.dup2(r, 3)  # dup2 makes 3 and 4 inheritable; everything else stays close-on-exec
            os.dup2(w, 4)

        args = [
            self.executable,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # CI runs as root, where the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--hide-scrollbars",
            "--mute-audio",
            "--allow-file-access-from-files",
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            args,
            preexec_fn=wire_fds,
            close_fds=False,  # Python's own descriptors are close-on-exec already
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if os.environ.get("MECHSCOPE_CHROMIUM_LOG") is None else None,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        try:
            self.send("Browser.getVersion")
        except BaseException:  # `with` calls no __exit__ when __enter__ fails: clean up here
            self.close()
            raise

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:  # ask politely; the reply may never come, so do not wait for it
                msg = {"id": self._next_id + 1, "method": "Browser.close", "params": {}}
                os.write(self._to_child, json.dumps(msg).encode() + b"\0")
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for fd in (self._to_child, self._from_child):
                os.close(fd)
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    # ---- the protocol --------------------------------------------------------------------------
    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one command (to the page's session when ``session``) and wait for its result."""
        if self._proc is None:
            raise BrowserError("the browser is not running: use it inside `with Browser() as b:`")
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self._session
        try:
            os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"Chromium exited before {method} could be sent") from None
        want = self._next_id
        reply = self._read_until(lambda m: m.get("id") == want, timeout or self.timeout, method)
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error']}")
        return dict(reply.get("result", {}))

    def _read_until(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if match(msg):
                    return dict(msg)
                if "method" in msg:
                    self._on_event(msg)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer {what} within {timeout:.0f} s")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited while waiting for {what}")
                self._buf += chunk

    def _on_event(self, msg: dict[str, Any]) -> None:
        self._events.append(msg)
        if msg["method"] == "Page.javascriptDialogOpening":  # a dialog blocks the page: dismiss
            os.write(
                self._to_child,
                json.dumps(
                    {
                        "id": 0,
                        "sessionId": msg.get("sessionId"),
                        "method": "Page.handleJavaScriptDialog",
                        "params": {"accept": False},
                    }
                ).encode()
                + b"\0",
            )

    # ---- pages ---------------------------------------------------------------------------------
    def load(self, url: str | os.PathLike[str], *, ready_timeout: float | None = None) -> PageLoad:
        """Open ``url`` (a path or URL) in a fresh tab and wait until it is rendered.

        A page that defines ``window.mechscopeReady`` (every mechscope page sets it after its first
        render) is waited for; any other page is waited for until its load event.
        """
        if isinstance(url, os.PathLike) or not re.match(r"[a-z][a-z0-9+.-]+:", str(url)):
            url = Path(url).resolve().as_uri()  # a path, not a URL with a scheme
        url = str(url)
        if self._target is not None:
            self.send("Target.closeTarget", {"targetId": self._target})
        self._target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send(
            "Target.attachToTarget", {"targetId": self._target, "flatten": True}
        )["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )
        self._events.clear()
        t0 = time.perf_counter()
        self.send("Page.navigate", {"url": url}, session=True)
        self._read_until(
            lambda m: m.get("method") == "Page.loadEventFired", self.timeout, f"loading {url}"
        )
        wait_ms = int(1000 * (ready_timeout if ready_timeout is not None else self.timeout / 2))
        ready_ms = self.evaluate(  # None: not a mechscope page, or it never finished rendering
            "new Promise(r => { const t0 = Date.now(); (function poll() {"
            " if (window.mechscopeReady !== undefined) r(window.mechscopeReady);"
            " else if (!document.querySelector('[data-mechscope]') || Date.now() - t0 > "
            f"{wait_ms}) r(null);"
            " else setTimeout(poll, 5); })(); })"
        )
        page = PageLoad(url, wall_ms=1000 * (time.perf_counter() - t0), ready_ms=ready_ms)
        self.evaluate("0")  # drain events raised during the last render
        for ev in self._events:
            self._record(page, ev)
        return page

    @staticmethod
    def _record(page: PageLoad, ev: dict[str, Any]) -> None:
        method, p = ev["method"], ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            page.console_errors.append(f"uncaught: {text}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            page.console_errors.append(f"console.{p['type']}: {args}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            page.console_errors.append(f"log: {p['entry'].get('text', '')}")
        elif method == "Page.javascriptDialogOpening":
            page.dialogs.append(f"{p.get('type')}: {p.get('message')}")
        elif method == "Network.requestWillBeSent":
            req = p.get("request", {}).get("url", "")
            if not req.startswith(_LOCAL_SCHEMES):
                page.requests.append(req)

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (promises are awaited) and return its JSON value."""
        res = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=True,
        )
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise BrowserError(
                f"script failed: {d.get('exception', {}).get('description') or d.get('text')}"
            )
        return res.get("result", {}).get("value")

    def screenshot(
        self, path: str | os.PathLike[str] | None = None, *, scale: float = 1.0
    ) -> bytes:
        """A PNG of the viewport (``scale`` < 1 shrinks it); also written to ``path`` if given."""
        params: dict[str, Any] = {"format": "png"}
        if scale != 1.0:
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": self.height}
            params["clip"]["scale"] = scale
        png = base64.b64decode(self.send("Page.captureScreenshot", params, session=True)["data"])
        if path is not None:
            from interp._io import atomic_write_bytes

            atomic_write_bytes(path, png)
        return png
