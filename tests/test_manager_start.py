"""Starting an NNI experiment waits for a slow NNI manager (NNI 3.0's own check gives it about 3 s)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from nni.experiment import launcher
from nni_utils import free_port

from ruas_nni.search.nni_compat import patient_manager_start


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"status": "RUNNING"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _server_after(port: int, delay: float) -> ThreadingHTTPServer:
    """A stand-in for the manager's REST server that starts listening after ``delay`` seconds."""
    holder: dict[str, ThreadingHTTPServer] = {}

    def serve() -> None:
        time.sleep(delay)
        holder["server"] = ThreadingHTTPServer(("localhost", port), _Status)
        holder["server"].serve_forever(poll_interval=0.1)

    threading.Thread(target=serve, daemon=True).start()
    return holder  # type: ignore[return-value]


def test_a_manager_that_answers_after_five_seconds_is_waited_for():
    original = launcher._check_rest_server
    late = free_port()
    holder = _server_after(late, 5.0)
    with pytest.raises(OSError):  # NNI's own check gives up (connection refused)
        original(late)
    started = time.monotonic()
    with patient_manager_start(30):
        launcher._check_rest_server(late)  # what Experiment.start calls
    assert launcher._check_rest_server is original  # restored
    assert time.monotonic() - started < 10
    holder["server"].shutdown()
    with patient_manager_start(1):
        with pytest.raises(OSError):  # nobody ever answers: requests' ConnectionError after the wait
            launcher._check_rest_server(free_port())
