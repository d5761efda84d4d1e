"""What a daemon holds, read from outside: its fds and RSS (from /proc) and server.status's counts.

Every driver takes a `health()` before it starts and compares one taken once
it is idle again (`leaks()`); `settled_leaks()` polls, because connections and
workspaces go a moment after their clients do. The soak prints the two side by
side.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import trio

from agentctl.client import Client, open_client

__all__ = ["COUNTS", "MCP_SDK_RSS", "RSS_SLACK", "Health", "health", "leaks", "settled_leaks"]

# The server.status counts that must come back to where they were once everything a driver did is over.
COUNTS = ("clients", "subscriptions", "workspaces", "active_runs", "tasks")
# RSS a daemon may keep over its start once idle: CPython keeps freed memory in its arenas, and SQLite its page
# cache. Memory that grows without bound passes this soon; a leak per request in a fuzzing round does too.
RSS_SLACK = 64 << 20
# What the MCP SDK's modules take once a workspace's first server has loaded them, never given back (measured:
# 41 MiB): a daemon whose workspaces ran MCP servers may keep this much more.
MCP_SDK_RSS = 48 << 20


@attrs.frozen
class Health:
    fds: dict[int, str]
    rss: int
    clients: int
    subscriptions: int
    workspaces: int
    active_runs: int
    tasks: int
    events_dropped: int

    def summary(self) -> dict[str, int]:
        """The numbers, for a soak's report."""
        return {"fds": len(self.fds), "rss_mib": self.rss >> 20, **{name: getattr(self, name) for name in COUNTS}}


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _fds(pid: int) -> dict[int, str]:
    fds: dict[int, str] = {}
    base = Path(f"/proc/{pid}/fd")
    for entry in base.iterdir():
        try:
            fds[int(entry.name)] = str(entry.readlink())
        except FileNotFoundError:
            pass  # closed while we looked
    return fds


async def health(pid: int, client: Client) -> Health:
    """What the daemon holds now, the caller's own connection included (one client, no subscription)."""
    status = await client.call("server.status")
    return Health(
        fds=_fds(pid),
        rss=_rss(pid),
        clients=status["clients"],
        subscriptions=status["subscriptions"],
        workspaces=status["workspaces"],
        active_runs=status["active_runs"],
        tasks=status["tasks"],
        events_dropped=status["events_dropped"],
    )


def leaks(before: Health, after: Health, *, rss_slack: int = RSS_SLACK) -> list[str]:
    """What `after` holds that `before` did not: each a sentence."""
    found = [
        f"server.status {name} is {getattr(after, name)}, was {getattr(before, name)}"
        for name in COUNTS
        if getattr(after, name) > getattr(before, name)
    ]
    if len(after.fds) > len(before.fds):
        extra = sorted(set(after.fds.items()) - set(before.fds.items()))
        found.append(f"the daemon holds {len(after.fds)} fds, held {len(before.fds)}; new: {extra[:10]}")
    if after.rss > before.rss + rss_slack:
        found.append(f"the daemon's RSS is {after.rss >> 20} MiB, was {before.rss >> 20} MiB")
    return found


async def settled_leaks(
    socket_path: Path, pid: int, before: Health, timeout: float, *, rss_slack: int = RSS_SLACK
) -> tuple[list[str], Health]:
    """`leaks()` once what is closing has gone, polled for at most `timeout`; and the last health read."""
    async with open_client(socket_path) as client:
        now = await health(pid, client)
        with trio.move_on_after(timeout):
            while leaks(before, now, rss_slack=rss_slack):
                await trio.sleep(0.1)
                now = await health(pid, client)
        return leaks(before, now, rss_slack=rss_slack), now
