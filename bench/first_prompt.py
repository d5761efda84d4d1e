"""The first prompt after start: from `agent.send` to the provider seeing the request, first vs. later.

A configured OpenAI-style provider points at a loopback HTTP server in this
process, which takes the time each request arrives (its first byte) and
answers with a short event stream. The client sends the same one-line prompt
several times, each waiting for its RunComplete; the first one pays whatever
the daemon does only once.

    python -m bench.first_prompt [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agentctl.autostart import spawn_daemon
from agentctl.blocking import BlockingClient

from ._common import Row, bench_env

__all__ = ["run"]

SECTION = "first prompt"
KEY_ENV = "AGENTD_BENCH_KEY"
SETTLE = 1.5
_ANSWER = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"ok"},'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


class _Provider:
    """A loopback HTTP/1.1 server that stamps each request's arrival and streams a short answer."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"
        self.arrivals: list[float] = []
        self._arrived = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                if not buffer:
                    with self._arrived:
                        self.arrivals.append(time.monotonic())
                        self._arrived.notify_all()
                buffer += data
                head, sep, rest = buffer.partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(rest) < length:
                    continue
                buffer = rest[length:]
                body = f"{len(_ANSWER):x}\r\n".encode() + _ANSWER + b"\r\n0\r\n\r\n"
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + body
                )

    def close(self) -> None:
        self._listener.close()


def _config(url: str) -> str:
    return f"""default_model = "loop"

[providers.loopback]
type = "openai"
base_url = "{url}"
api_key_env = "{KEY_ENV}"

[models.loop]
provider = "loopback"
model = "loop-model"
"""


def _send_and_wait(client: BlockingClient, ws_id: str, session_id: str, sub_id: str) -> float:
    """Seconds from just before `agent.send` to its RunComplete; the arrival is read from the provider."""
    reply = client.call("agent.send", {"workspace_id": ws_id, "session_id": session_id, "prompt": "hello"}, timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        item = client.next_notification(timeout=30)
        if item is None:
            continue
        event = item[1][0]
        if event["subscription_id"] == sub_id and event["type"] == "run.complete":
            if event["payload"]["run_id"] == reply["run_id"]:
                if event["payload"]["error"] is not None:
                    raise RuntimeError(f"the run failed: {event['payload']['error']}")
                return time.monotonic()
    raise TimeoutError("no run.complete within 30 s")


def _measure(prompts: int) -> dict[str, Any]:
    provider = _Provider()
    workdir = Path(tempfile.mkdtemp(prefix="agf", dir="/tmp"))
    env = bench_env(workdir)
    env[KEY_ENV] = "sk-bench"
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)
    config = workdir / "config" / "agentd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(_config(provider.url))
    (workdir / "project").mkdir()
    socket_path = workdir / "agentd.sock"
    proc = spawn_daemon(socket_path, (), log_path=workdir / "agentd.log", env=env)
    # A daemon that has been up a moment, as when the prompt is not the one that started it.
    time.sleep(SETTLE)
    try:
        with BlockingClient.connect(socket_path) as client:
            ws = client.call("workspace.open", {"path": str(workdir / "project")}, timeout=10)
            sub = client.call("events.subscribe", {"workspace_id": ws["id"]}, timeout=10)
            latencies = []
            for i in range(prompts):
                session = client.call("session.create", {"workspace_id": ws["id"], "title": f"p{i}"}, timeout=10)
                sent = time.monotonic()
                _send_and_wait(client, ws["id"], session["id"], sub["subscription_id"])
                latencies.append(provider.arrivals[i] - sent)
    finally:
        provider.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"first_ms": latencies[0] * 1000, "later_ms": [x * 1000 for x in latencies[1:]]}


def run(quick: bool = False) -> tuple[dict[str, Any], list[Row]]:
    starts = 2 if quick else 5
    prompts = 5 if quick else 10
    runs = [_measure(prompts) for _ in range(starts)]
    firsts = [r["first_ms"] for r in runs]
    later = statistics.median(x for r in runs for x in r["later_ms"])
    first = statistics.median(firsts)
    data = {"daemon_starts": starts, "prompts_per_start": prompts, "runs": runs, "pid": os.getpid()}
    rows = [
        Row(
            SECTION,
            f"agent.send -> provider sees it: first after start / later (median of {starts} starts)",
            f"{first:.1f} ms / {later:.1f} ms (firsts {', '.join(f'{x:.0f}' for x in firsts)})",
        ),
    ]
    return data, rows


def _main() -> None:
    data, rows = run(quick="--quick" in sys.argv[1:])
    for row in rows:
        print(f"{row.what:80} {row.value}")
    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    _main()
