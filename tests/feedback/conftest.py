"""Shared helpers of the labeling page's tests: comparisons files, a server on a loopback port in a thread, and a
small JSON-over-HTTP client (urllib: no extra dependency)."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rlhfkit.data.comparisons import comparison_row

NEEDS_EXTRA = "the labeling page needs the label extra: pip install 'rlhfkit[label]'"
SCRIPT = "<script>window.pwned=1</script>"
IMG = '<img src=x onerror="window.pwned=2">'


def write_comparisons(path: Path, n: int = 12, k: int = 2) -> list[dict]:
    """``n`` items of ``k`` responses; the last one holds a <script> and an <img onerror> response."""
    rows = [
        comparison_row(f"Prompt {i}: name a fruit.", [f"Answer {chr(65 + j)} to prompt {i}." for j in range(k)])
        for i in range(n - 1)
    ]
    rows.append(comparison_row("Show some HTML.", [SCRIPT, IMG, *(f"plain {j}" for j in range(k - 2))]))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def request(url: str, body: dict | None = None, timeout: float = 10.0) -> tuple[int, dict]:
    """``(status, JSON answer)`` of a GET (no body) or a JSON POST (an answer that is not JSON: ``{"text": ...}``)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, _parsed(resp.read(), resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, _parsed(e.read(), e.headers)


def _parsed(body: bytes, headers) -> dict:
    return json.loads(body) if headers.get_content_type() == "application/json" else {"text": body.decode()}


class Served:
    """A :class:`~rlhfkit.feedback.session.LabelSession` served on 127.0.0.1 in a thread of this process."""

    def __init__(self, session, host: str = "127.0.0.1"):
        from rlhfkit.feedback.server import bind, build_app, uvicorn_server

        self.session = session
        sock = bind(host, 0)
        self.base = f"http://{host}:{sock.getsockname()[1]}"
        self.server = uvicorn_server(build_app(session, host))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start in 10 s"
            time.sleep(0.01)

    def url(self, path: str, labeler: str | None = None, key: str | None = None) -> str:
        query = "&".join(f"{k}={v}" for k, v in (("labeler", labeler), ("key", key)) if v is not None)
        return f"{self.base}{path}{'?' + query if query else ''}"

    def task(self, labeler: str, key: str | None = None) -> dict:
        status, answer = request(self.url("/api/task", labeler, key))
        assert status == 200, answer
        return answer

    def vote(self, labeler: str, task: dict, choice: str = "left", vote_id: str | None = None, **extra) -> dict:
        body = {"vote_id": vote_id or _new_id(), "item_id": task["item_id"], "pair": task["pair"], "choice": choice}
        status, answer = request(self.url("/api/vote", labeler), {**body, **extra})
        assert status == 200, answer
        return answer

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.session.close()


def _new_id() -> str:
    import secrets

    return secrets.token_hex(8)


@pytest.fixture
def serve():
    """``serve(session)`` -> a running :class:`Served`; stopped after the test."""
    pytest.importorskip("starlette", reason=NEEDS_EXTRA)
    pytest.importorskip("uvicorn", reason=NEEDS_EXTRA)
    running = []

    def start(session, host: str = "127.0.0.1") -> Served:
        running.append(Served(session, host))
        return running[-1]

    yield start
    for served in running:
        served.stop()


REPO = Path(__file__).resolve().parents[2]


class LabelProcess:
    """``rlhfkit label COMPARISONS --out VOTES --port 0 ARGS`` in a process of its own; :attr:`base` is its address,
    :attr:`output` what it printed."""

    def __init__(self, comparisons: Path, votes: Path, *args: str, log: Path):
        import os
        import subprocess
        import sys

        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "rlhfkit.cli", "label", str(comparisons), "--out", str(votes), "--port", "0"]
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while "Ctrl-C stops" not in self.output:
            assert self.proc.poll() is None, f"rlhfkit label exited: {self.output}"
            assert time.monotonic() < deadline, f"rlhfkit label did not start in 30 s: {self.output}"
            time.sleep(0.05)
        self.base = re.search(r"http://127\.0\.0\.1:\d+", self.output).group(0)

    @property
    def output(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int) -> int:
        """Send ``sig``; the exit code (negative: killed by that signal)."""
        self.proc.send_signal(sig)
        return self.proc.wait(30)


@pytest.fixture
def label_process(tmp_path):
    """``label_process(comparisons, votes, *args)`` -> a running :class:`LabelProcess`; killed after the test."""
    pytest.importorskip("starlette", reason=NEEDS_EXTRA)
    pytest.importorskip("uvicorn", reason=NEEDS_EXTRA)
    started = []

    def start(comparisons: Path, votes: Path, *args: str) -> LabelProcess:
        started.append(LabelProcess(comparisons, votes, *args, log=tmp_path / f"label-{len(started)}.log"))
        return started[-1]

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)
