"""Writing to stdout when its reader may have gone away (`agentctl sessions | head -1`).

A closed stdout is not a lost daemon: the commands end quietly on it (see
`cli.main`), and nothing else may mistake the BrokenPipeError for the daemon's
socket failing.
"""

from __future__ import annotations

import os
import sys

__all__ = ["StdoutClosed", "emit", "silence_stdout"]


class StdoutClosed(BrokenPipeError):
    """Whoever read our stdout has closed it (a BrokenPipeError, so `cli.main` needs no import to catch it)."""


def emit(text: str) -> None:
    """Write `text` to stdout, now; StdoutClosed when its reader went away."""
    if sys.stdout is None:  # started with fd 1 closed: there is no reader to tell
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        raise StdoutClosed from None


def silence_stdout() -> None:
    """Point stdout at /dev/null, so what is still buffered (and the interpreter's last flush) goes nowhere quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
