"""Whether the daemon that answers is the version of this agentctl, and what to say when not."""

from __future__ import annotations

from agentd import __version__

__all__ = ["version_mismatch"]


def version_mismatch(daemon_version: object) -> str | None:
    """The warning for a daemon of another version, or None when it is ours.

    A daemon outlives upgrades: the one serving the socket may have been
    started from the installation before this one, and differ in what it does.
    """
    if daemon_version == __version__:
        return None
    return (
        f"warning: agentd is version {daemon_version}, this agentctl is {__version__};"
        " restart the daemon (`agentctl restart`) to run this version"
    )
