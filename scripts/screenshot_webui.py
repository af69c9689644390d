"""Screenshots of a running experiment's NNI web UI, as a user sees it, with headless Chromium.

    python scripts/screenshot_webui.py --port 8080 --out docs/images

writes ``webui_overview.png`` (``/oview``), ``webui_trials.png`` (``/detail``, the trials table) and
``webui_intermediate.png`` (``/detail``, tab "Intermediate result": each trial's intermediate PSNR per
search epoch). Chromium (Debian package ``chromium``) is driven through its DevTools protocol (the
``websockets`` package), because the intermediate-result chart is behind a tab that must be clicked.
Prints one line per picture; exit status 0, or 1 when a page did not render.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

PAGES = [
    # (file, path, tab to click first or None, text the rendered page must hold)
    ("webui_overview.png", "/oview", None, "Trial numbers"),
    ("webui_trials.png", "/detail", None, "Trial No."),
    ("webui_intermediate.png", "/detail", "Intermediate result", "# Intermediate result"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, socket_: websockets.WebSocketClientProtocol) -> None:
        self.ws, self.next_id = socket_, 0

    async def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def evaluate(self, expression: str) -> object:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def wait_for_text(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.evaluate(f"document.body && document.body.innerText.includes({json.dumps(text)})"):
                return True
            await asyncio.sleep(0.5)
        return False


async def _shoot(debug_port: int, url: str, out: Path, width: int, height: int, settle: float) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=10) as response:
        targets = [t for t in json.loads(response.read()) if t.get("type") == "page"]
    problems = []
    async with websockets.connect(targets[0]["webSocketDebuggerUrl"], max_size=2**26) as ws:
        page = Page(ws)
        await page.call("Page.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        for name, path, tab, expected in PAGES:
            await page.call("Page.navigate", url=url + path)
            rendered = await page.wait_for_text("Trial" if tab else expected, 60)
            if tab and rendered:
                clicked = await page.evaluate(
                    "(() => { const tab = [...document.querySelectorAll('[role=tab], button')]"
                    f".find(b => b.innerText.includes({json.dumps(tab)})); if (tab) tab.click(); return !!tab; }})()")
                rendered = bool(clicked) and await page.wait_for_text(expected, 30)
            await asyncio.sleep(settle)  # charts animate in
            shot = await page.call("Page.captureScreenshot", format="png")
            (out / name).write_bytes(base64.b64decode(shot["data"]))
            print(f"{out / name}: {url}{path}" + (f" (tab {tab})" if tab else "") + ("" if rendered else " NOT RENDERED"))
            if not rendered:
                problems.append(name)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port of the experiment's web UI")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to let charts draw")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    debug_port = _free_port()
    with tempfile.TemporaryDirectory(prefix="ruas-webui-shots-") as profile:
        browser = subprocess.Popen(
            [args.chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--remote-debugging-port={debug_port}", f"--user-data-dir={profile}",
             f"--window-size={args.width},{args.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/version", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or browser.poll() is not None:
                        print(f"screenshot_webui: Chromium ({args.chromium}) did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.5)
            problems = asyncio.run(_shoot(debug_port, f"http://{args.host}:{args.port}", out, args.width,
                                          args.height, args.settle))
        finally:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
    if problems:
        print(f"screenshot_webui: did not render: {', '.join(problems)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
