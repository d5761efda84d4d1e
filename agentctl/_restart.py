"""`agentctl restart [--now]`: replace whichever daemon serves the socket with a fresh one.

Socket-activated (server.status says so) with systemctl on PATH: the user
manager restarts the service, so it keeps its unit's environment and watchdog.
Otherwise the daemon is asked to shut down and a new one is started the way
`agentctl` starts one on demand. Without `--now` the active runs finish first;
with it they end cancelled, recorded and reported to their clients.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from agentctl.autostart import DaemonUnavailable, ensure_daemon
from agentctl.blocking import BlockingClient
from agentctl.errors import ConnectionLost, RpcError
from agentd.paths import resolve_socket_path

__all__ = ["restart"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

# How long the old daemon may take to close its connections and exit.
STOP_TIMEOUT = 20.0
# How often active_runs is looked at while waiting for the runs to finish.
_POLL = 0.2


class _Failed(Exception):
    pass


def restart(args: argparse.Namespace) -> int:
    socket_path = resolve_socket_path(args.socket)
    try:
        try:
            client = BlockingClient.connect(socket_path)
        except OSError:
            print(f"agentd was not running on {socket_path}")
            return _started(socket_path, None)
        with client:
            status: dict[str, Any] = client.call("server.status")
            old_pid = int(status["pid"])
            if args.now:
                if status["active_runs"]:
                    print(f"cancelling {status['active_runs']} active run(s)")
            else:
                _wait_for_runs(client, status)
            systemctl = shutil.which("systemctl") if status.get("socket_activated") else None
            flags = [] if systemctl is not None else _daemon_flags(old_pid)
            if systemctl is None:
                client.call("server.shutdown", {})
                _wait_closed(client)
        if systemctl is not None:
            command = [systemctl, "--user", "restart", "agentd.service"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=STOP_TIMEOUT + 10, check=False)
            if done.returncode != 0:
                raise _Failed(
                    f"systemctl --user restart agentd.service failed: {done.stderr.strip() or done.returncode}"
                )
            print("ran: systemctl --user restart agentd.service")
        else:
            _wait_exited(old_pid)
            print(f"agentd {old_pid} stopped")
        # Under systemd the connection ensure_daemon probes with is what starts the new one.
        return _started(socket_path, old_pid, flags)
    except _Failed as exc:
        print(f"agentctl restart: {exc}", file=sys.stderr)
        return 1
    except RpcError as exc:
        print(f"agentctl restart: {exc}", file=sys.stderr)
        return 1
    except (ConnectionLost, OSError, subprocess.TimeoutExpired) as exc:
        print(f"agentctl restart: {exc}", file=sys.stderr)
        return 3


def _wait_for_runs(client: BlockingClient, status: dict[str, Any]) -> None:
    """Until the daemon has no unfinished run.

    Polled, not promised: a run another client starts between the last look and
    the shutdown is cancelled by it, recorded and reported like any other.
    """
    told = False
    while status["active_runs"]:
        if not told:
            print(f"waiting for {status['active_runs']} active run(s) to finish (--now cancels them)", flush=True)
            told = True
        time.sleep(_POLL)
        status = client.call("server.status")


def _wait_closed(client: BlockingClient) -> None:
    # The daemon closes every connection as its last act.
    deadline = time.monotonic() + STOP_TIMEOUT
    try:
        while time.monotonic() < deadline:
            client.next_notification(deadline - time.monotonic())
    except ConnectionLost:
        return
    raise _Failed(f"agentd did not stop within {STOP_TIMEOUT:.0f}s")


def _wait_exited(pid: int) -> None:
    """Until `pid` is gone: its lock on the socket goes with it, and a new daemon needs that lock."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.02)
    raise _Failed(f"agentd {pid} did not exit within {STOP_TIMEOUT:.0f}s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, and not ours to signal
    # A zombie has let go of everything (its lock included); only its parent can reap it.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


# Set anew for each daemon agentctl starts: the same socket, and a pipe of its own.
_OWN_FLAGS = ("--socket", "--ready-fd")


def _daemon_flags(pid: int) -> list[str]:
    """The options daemon `pid` was started with (`--model`, `--idle-exit`...), for its successor.

    Read from /proc/PID/cmdline: `python -m agentd ARGS`, or the `agentd`
    script's `python .../agentd ARGS`. None kept when that cannot be read.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [arg.decode(errors="surrogateescape") for arg in f.read().split(b"\0")[:-1]]
    except OSError:
        return []
    for i, arg in enumerate(argv):
        if arg == "-m" and argv[i + 1 : i + 2] == ["agentd"]:
            rest = argv[i + 2 :]
            break
        if os.path.basename(arg) == "agentd":
            rest = argv[i + 1 :]
            break
    else:
        return []
    kept: list[str] = []
    skip = False
    for arg in rest:
        if skip:
            skip = False
        elif arg in _OWN_FLAGS:
            skip = True  # and its value
        elif not arg.startswith(tuple(f"{flag}=" for flag in _OWN_FLAGS)):
            kept.append(arg)
    return kept


def _started(socket_path: str, old_pid: int | None, flags: Sequence[str] = ()) -> int:
    try:
        ensure_daemon(socket_path, flags)
    except DaemonUnavailable as exc:
        raise _Failed(f"cannot start agentd: {exc}") from None
    with BlockingClient.connect(socket_path) as client:
        new_pid = int(client.call("server.status")["pid"])
    if old_pid is None:
        print(f"agentd {new_pid} started")
    else:
        print(f"agentd restarted: pid {old_pid} -> {new_pid}")
    return 0
