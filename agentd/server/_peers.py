"""Who may talk to the daemon: its own user, and root only when `--allow-root` says so.

The socket's 0600 mode and private folder already keep others out; this is
the check that holds when they do not (a socket handed over by a service
manager, a folder the user chose with `--socket`). It reads the kernel's
record of the peer (`SO_PEERCRED`), so it cannot be talked around.
"""

from __future__ import annotations

import logging
import os

import trio

from agentd.trust import peer_credentials

__all__ = ["PeerGate"]

log = logging.getLogger("agentd")

# A refused peer can connect again as fast as it likes; the log says so this
# many times per window, then counts.
_LOGGED_PER_WINDOW = 5
_WINDOW = 60.0


class PeerGate:
    def __init__(self, *, allow_root: bool = False) -> None:
        self._uid = os.getuid()
        self._allow_root = allow_root
        self._window_start = -_WINDOW
        self._logged = 0
        self._unlogged = 0

    def admits(self, stream: trio.SocketStream) -> bool:
        """Whether the process on the other end may use the daemon; a refusal is logged, within bounds."""
        try:
            pid, uid, _ = peer_credentials(stream.socket)
        except OSError as exc:
            log.warning("refused a connection whose peer cannot be identified: %s", exc)
            return False
        if uid == self._uid or (uid == 0 and self._allow_root):
            return True
        self._note_refusal(pid, uid)
        return False

    def _note_refusal(self, pid: int, uid: int) -> None:
        now = trio.current_time()
        if now - self._window_start >= _WINDOW:
            if self._unlogged:
                log.warning("refused %d more connection(s) from other users in the last window", self._unlogged)
            self._window_start, self._logged, self._unlogged = now, 0, 0
        if self._logged >= _LOGGED_PER_WINDOW:
            self._unlogged += 1
            return
        self._logged += 1
        why = "root, and --allow-root is not set" if uid == 0 else f"not this daemon's user (uid {self._uid})"
        log.warning("refused a connection from uid %d (pid %d): %s", uid, pid, why)
