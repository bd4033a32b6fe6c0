"""Headless Chromium for the tests, driven over the Chrome DevTools protocol (a small ``websockets``
client): open a local page, evaluate JavaScript, and collect what went wrong while it loaded.

Name lookups are disabled in the browser, as on a machine without a network: a page's online resources
(the map tiles) fail fast, which :func:`problems` tells apart from real errors. Chromium missing skips
the test with the install command, unless ``HEIMDALL_REQUIRE_CHROMIUM=1`` (CI), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from heimdall.inference.maps_html import TILE_URL

REQUIRE = os.environ.get("HEIMDALL_REQUIRE_CHROMIUM") == "1"
TILE_HOST = TILE_URL.split("/")[2]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "chromium is not installed (apt-get install -y chromium)"
    if REQUIRE:
        pytest.fail(message + " and HEIMDALL_REQUIRE_CHROMIUM=1")
    pytest.skip(message)


class DevTools:
    """One page of a headless Chromium, over the DevTools protocol: commands and the events seen."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=20)
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def call(self, method: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(msg)
            if msg.get("method") == method:
                return msg

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")


@contextmanager
def chromium(profile: Path) -> Iterator[str]:
    """A headless Chromium with remote debugging; yields its HTTP DevTools endpoint."""
    binary = chromium_binary()
    proc = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: nothing resolves (tiles fail fast)
            "--window-size=1000,800",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit {proc.poll()})")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def open_page(endpoint: str, html_file: Path) -> DevTools:
    req = urllib.request.Request(f"{endpoint}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        target = json.loads(r.read())
    page = DevTools(target["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Log"):
        page.call(f"{domain}.enable")
    page.call("Page.navigate", url=html_file.as_uri())
    page.wait_for("Page.loadEventFired")
    page.drain(1.5)  # let the tile requests fail and any late error arrive
    return page


def problems(page: DevTools) -> list[str]:
    """Exceptions, console errors/warnings, and log errors other than the (offline) tile loads."""
    out = []
    for ev in page.events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(f"exception: {p['exceptionDetails']}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            out.append(f"console.{p['type']}: {p.get('args')}")
        elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            entry = p["entry"]
            if entry.get("source") == "network" and TILE_HOST in entry.get("url", ""):
                continue
            out.append(
                f"log {entry['level']} ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
            )
    return out


def layer_counts(page: DevTools) -> dict[str, int]:
    """SVG paths drawn per kind of feature (the classes the map gives its layers)."""
    receivers = ["receiver", *(f"receiver-{s}" for s in ("used", "absent", "refused", "excluded"))]
    classes = ["ellipse", *receivers, "position", "truth", "error-line"]
    expr = "({" + ",".join(
        f'"{c}": document.querySelectorAll(".leaflet-overlay-pane path.heimdall-{c}").length' for c in classes
    )
    return page.evaluate(expr + "})")
