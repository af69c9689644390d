"""NNI's remote (SSH) training service for real: scripts/remote_selftest.sh starts a throwaway sshd on
127.0.0.1 and runs a 2-trial comparison over it. Skipped (with the reason) where sshd cannot start."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _sshd_can_start() -> str | None:
    """``None`` when a throwaway sshd starts here, else why not."""
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists() or not shutil.which("ssh-keygen") or not shutil.which("ssh"):
        return "openssh (sshd, ssh, ssh-keygen) is not installed"
    with tempfile.TemporaryDirectory() as folder:
        key = Path(folder) / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        config = Path(folder) / "sshd_config"
        with socket.socket() as probe:  # sshd refuses port 0: check with a real free port
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config.write_text(f"HostKey {key}\nListenAddress 127.0.0.1\nPort {port}\nUsePAM no\n")
        if os.access("/run", os.W_OK):  # sshd's privilege separation folder (the script makes it too)
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        result = subprocess.run([str(sshd), "-t", "-f", str(config)], capture_output=True, text=True)
        if result.returncode != 0:
            return f"sshd -t fails: {(result.stderr or result.stdout).strip().splitlines()[-1:]}"
    return None


def test_remote_selftest(tmp_path):
    reason = _sshd_can_start()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    result = subprocess.run(["bash", str(ROOT / "scripts" / "remote_selftest.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1200)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("remote selftest: OK"), lines
    assert list(tmp_path.iterdir()) == []  # it removed what it made
