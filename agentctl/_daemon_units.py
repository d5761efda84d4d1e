"""The systemd user units for agentd, and `agentctl daemon install | uninstall`.

The unit text lives here, once: `systemd/agentd.socket` and
`systemd/agentd.service` in the source tree are these templates rendered with
`CHECKED_IN_EXEC` (tests/test_systemd_units.py holds them equal), and
`install` renders them with this installation's own agentd.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

__all__ = ["CHECKED_IN_EXEC", "agentd_executable", "install", "render_units", "uninstall", "unit_dir"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

SOCKET_UNIT = "agentd.socket"
SERVICE_UNIT = "agentd.service"
# What the checked-in service runs; `install` puts the real path in its place.
CHECKED_IN_EXEC = "%h/.local/bin/agentd"
# How long systemctl may take; a user manager that does not answer must not hang install.
_SYSTEMCTL_TIMEOUT = 30.0

_SOCKET_TEMPLATE = """\
[Unit]
Description=agentd socket: the coding agent daemon starts on the first connection

[Socket]
# %t is $XDG_RUNTIME_DIR: the path agentctl connects to by default.
ListenStream=%t/agentd/agentd.sock
# The socket and its folder are the user's alone.
SocketMode=0600
DirectoryMode=0700
# One daemon serves every connection (not one process per connection).
Accept=no

[Install]
WantedBy=sockets.target
"""

_SERVICE_TEMPLATE = """\
[Unit]
Description=agentd: the coding agent daemon
Requires=agentd.socket
After=agentd.socket

[Service]
# agentd sends READY=1 once it serves, STOPPING=1, STATUS= and WATCHDOG=1 itself.
Type=notify
NotifyAccess=main
ExecStart={exec_start}
# agentd pings at half of this from its event loop: a wedged loop is restarted.
WatchdogSec=30s
Restart=on-failure
# 75: another agentd already serves the socket; starting again would not help.
RestartPreventExitStatus=75
# The graceful drain (--graceful-timeout, 8 s) plus closing the store, with margin.
TimeoutStopSec=20s
# No RuntimeDirectory=: systemd would delete the socket's folder on every stop.

[Install]
Also=agentd.socket
"""


def render_units(exec_start: str) -> dict[str, str]:
    """The two unit files, by name, with `exec_start` as the service's command line."""
    return {SOCKET_UNIT: _SOCKET_TEMPLATE, SERVICE_UNIT: _SERVICE_TEMPLATE.format(exec_start=exec_start)}


def quote_exec(words: list[str]) -> str:
    """`words` as one ExecStart= line: each quoted for systemd, `%` escaped as `%%`."""
    out = []
    for word in words:
        if any(c in word for c in "\n\r\0"):
            raise ValueError(f"cannot put a path with a newline or NUL in a unit file: {word!r}")
        escaped = word.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'"{escaped}"' if (escaped != word or any(c.isspace() for c in word) or not word) else word)
    return " ".join(out)


def agentd_executable() -> list[str]:
    """This installation's agentd: beside our interpreter, else on PATH, else `python -m agentd`."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "agentd")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("agentd")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "agentd"]


def unit_dir(environ: Mapping[str, str] | None = None) -> str:
    """`$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`."""
    env = os.environ if environ is None else environ
    config = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "systemd", "user")


def _systemctl(*args: str) -> bool:
    """Run `systemctl --user ARGS`, saying what was run and how it went; False when it failed."""
    systemctl = shutil.which("systemctl")
    command = ["systemctl", "--user", *args]
    if systemctl is None:
        print(f"skipped: {' '.join(command)} (systemctl is not on PATH)")
        return False
    try:
        done = subprocess.run(
            [systemctl, "--user", *args], capture_output=True, text=True, timeout=_SYSTEMCTL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"failed: {' '.join(command)}: {exc}")
        return False
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        print(f"failed: {' '.join(command)} (exit {done.returncode}): {why[-1] if why else 'no output'}")
        return False
    print(f"ran: {' '.join(command)}")
    return True


def install(args: argparse.Namespace) -> int:
    target = unit_dir()
    try:
        exec_start = quote_exec(agentd_executable())
    except ValueError as exc:
        print(f"agentctl daemon install: {exc}", file=sys.stderr)
        return 1
    try:
        os.makedirs(target, exist_ok=True)
        for name, text in render_units(exec_start).items():
            path = os.path.join(target, name)
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
            print(f"wrote {path}")
    except OSError as exc:
        print(f"agentctl daemon install: cannot write the units to {target}: {exc}", file=sys.stderr)
        return 1
    print(f"ExecStart={exec_start}")
    # Without a user manager (a container, a session without lingering) the units
    # are still in place for the next login: report, do not fail.
    if _systemctl("daemon-reload"):
        _systemctl("enable", "--now", SOCKET_UNIT)
    return 0


def uninstall(args: argparse.Namespace) -> int:
    target = unit_dir()
    _systemctl("disable", "--now", SOCKET_UNIT, SERVICE_UNIT)
    for name in (SOCKET_UNIT, SERVICE_UNIT):
        path = os.path.join(target, name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            print(f"not there: {path}")
        except OSError as exc:
            print(f"agentctl daemon uninstall: cannot remove {path}: {exc}", file=sys.stderr)
            return 1
        else:
            print(f"removed {path}")
    _systemctl("daemon-reload")
    return 0
