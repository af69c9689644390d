"""Helpers for tests that run real NNI experiments: free ports, REST calls, the manager's process
tree, CLI runs with a private ``HOME`` (nnictl's experiment list lives in ``~/nni-experiments``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A localhost port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 1.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def rest(port: int, path: str) -> Any:
    """GET ``/api/v1/nni<path>`` of the NNI manager on ``port``."""
    response = requests.get(f"http://127.0.0.1:{port}/api/v1/nni{path}", timeout=10)
    response.raise_for_status()
    return response.json()


def decode_metric(data: str) -> Any:
    """NNI's metric data is a JSON string inside a JSON string."""
    return json.loads(json.loads(data))


def trials_finished(port: int, count: int) -> list[dict] | None:
    jobs = rest(port, "/trial-jobs")
    done = [j for j in jobs if j["status"] in ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED")]
    return jobs if len(jobs) >= count and len(done) == len(jobs) else None


def trial_folder(job: dict) -> Path:
    """A local trial's folder (its NNI_OUTPUT_DIR) from the REST API's logPath (``file://host:/path``)."""
    path = job["logPath"].split("://", 1)[-1]
    return Path(path.split(":", 1)[1] if ":" in path else path)


def home_env(home: Path) -> dict[str, str]:
    """The environment for a CLI run with a private home folder (nnictl's experiment list)."""
    env = dict(os.environ)
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def ruas_cli(args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruas_nni", *args], cwd=ROOT, env=home_env(home),
                          capture_output=True, text=True, timeout=timeout)


def nnictl(args: list[str], home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "nnictl"), *args], cwd=ROOT, env=home_env(home),
                          capture_output=True, text=True, timeout=timeout)


def manager_pid(home: Path, experiment_id: str) -> int:
    """The NNI manager's process id, from nnictl's experiment list in ``home``."""
    manifest = json.loads((home / "nni-experiments" / ".experiment").read_text())
    return int(manifest[experiment_id]["pid"])


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (the manager, its tuner, trials, TensorBoard)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def assert_all_gone(processes: list[psutil.Process], timeout: float = 30) -> None:
    """Every process of the list has exited (zombies count as gone)."""
    def gone() -> bool:
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    try:
        wait_until(gone, timeout, 0.5, "the experiment's processes to exit")
    except AssertionError:
        alive = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
                    process.kill()
            except psutil.NoSuchProcess:
                pass
        raise AssertionError(f"processes left behind (killed now): {alive}") from None


def small_pairs(source: Path, target: Path, side: int = 48) -> Path:
    """A paired folder with ``side`` x ``side`` centre crops of ``source``'s pairs (fast to score)."""
    for sub in ("low", "high"):
        (target / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((source / sub).iterdir()):
            with Image.open(path) as image:
                w, h = image.size
                box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
                image.convert("RGB").crop(box).save(target / sub / path.name)
    return target
