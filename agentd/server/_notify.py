"""sd_notify(3) by hand: READY, STOPPING, STATUS and the watchdog, over `$NOTIFY_SOCKET`.

A few lines over a datagram socket, no dependency. Without `$NOTIFY_SOCKET`
(not started by systemd) every call is a no-op; a failure to send is logged
once and never stops the daemon.
"""

from __future__ import annotations

import logging
import os
import socket as stdlib_socket
from collections.abc import Callable

import trio

__all__ = ["Notifier", "watchdog_interval"]

log = logging.getLogger("agentd")

# How often the STATUS= summary is looked at; it is sent only when it changed.
STATUS_PERIOD = 1.0


class Notifier:
    def __init__(self, address: str | None) -> None:
        # '@' is systemd's spelling of the abstract namespace: a leading NUL.
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self._sock: stdlib_socket.socket | None = None
        self._failed = False
        self._last_status: str | None = None

    @classmethod
    def from_environment(cls) -> Notifier:
        # Ours alone: a process a run starts must not speak for the daemon.
        return cls(os.environ.pop("NOTIFY_SOCKET", None) or None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        if self._address is None:
            return
        try:
            if self._sock is None:
                self._sock = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd on %r: %s (further failures are not logged)", self._address, exc)

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def keep_status(self, summary: Callable[[], str]) -> None:
        """STATUS= whenever the summary changes, at most once per STATUS_PERIOD."""
        while True:
            self.status(summary())
            await trio.sleep(STATUS_PERIOD)

    async def keep_watchdog(self, interval: float) -> None:
        """WATCHDOG=1 every `interval` seconds, from the main loop: a wedged loop stops the pings (the point)."""
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(interval)


def watchdog_interval() -> float | None:
    """Half of `$WATCHDOG_USEC`, in seconds, when the watchdog is meant for this process; else None."""
    usec, pid = os.environ.pop("WATCHDOG_USEC", None), os.environ.pop("WATCHDOG_PID", None)
    if not usec:
        return None
    try:
        if pid and int(pid) != os.getpid():
            return None
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r WATCHDOG_PID=%r: not numbers", usec, pid)
        return None
    return value / 2 / 1_000_000 if value > 0 else None
