"""`session.list_all`: every workspace's sessions, open or not, with the workspace's directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support import Daemon, open_workspace


async def test_list_all_groups_every_workspaces_sessions_newest_first_open_or_not(
    daemon: Daemon, short_tmp: Path
) -> None:
    here, there = short_tmp / "here", short_tmp / "there"
    here.mkdir()
    there.mkdir()
    async with daemon.client() as client:
        ws_there = await open_workspace(client, there)
        old = await ws_there.new_session("old there")
        await client.call("workspace.close", {"workspace_id": ws_there.id})
    async with daemon.client() as client:
        ws_here = await open_workspace(client, here)
        a = await ws_here.new_session("a")
        b = await ws_here.new_session("b")
        hanging = await ws_here.send(b, {"chunks": ["x"], "hang": True})
        await ws_here.events.until(lambda e: e["type"] == "message.delta")
        groups: list[dict[str, Any]] = await client.call("session.list_all")
        assert [g["workspace"] for g in groups] == [
            {"id": ws_here.id, "path": str(here)},
            {"id": ws_there.id, "path": str(there)},
        ]
        assert [(s["id"], s["busy"]) for s in groups[0]["sessions"]] == [(b, True), (a, False)]
        assert [(s["id"], s["title"], s["busy"]) for s in groups[1]["sessions"]] == [(old, "old there", False)]
        # The same records as session.list gives.
        listed = await client.call("session.list", {"workspace_id": ws_here.id})
        assert groups[0]["sessions"] == listed
        await ws_here.cancel(b)
        await ws_here.events.until_complete(hanging["run_id"])
