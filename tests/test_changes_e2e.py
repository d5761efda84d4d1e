"""A scripted run whose tool calls write and edit files, then `run.changes`, `agentctl diff` and `agentctl undo`.

Everything real: the scripted model plays tool-call steps, the agent loop runs
the `write` and `edit` tools, which record each change; agentctl shows and
undoes them. (Deleting a file is not something the file tools do: that case
is in test_changes_daemon, recorded as the tools record.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
from support import DaemonFactory, open_workspace, run_agentctl

from agentd.protocol import AgentSendParams
from agentd.tools import TOOLS

pytestmark = pytest.mark.skipif(
    not {"write", "edit"} <= set(TOOLS) or "allow" not in attrs.fields_dict(AgentSendParams),
    reason="needs the write and edit tools, and agent.send's allow rules",
)


def script(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": [*steps, {"chunks": ["done"]}]})


def calls(*tool_calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments} for name, arguments in tool_calls]}


EDITS = script(
    calls(("write", {"path": "pkg/new.py", "content": "x = 1\n"})),
    calls(("edit", {"path": "main.py", "old_string": "hello", "new_string": "hello, world"})),
    calls(("edit", {"path": "notes.txt", "old_string": "draft", "new_string": "final"})),
)


@pytest.fixture
def files(project: Path) -> Path:
    (project / "main.py").write_text("print('hello')\n")
    (project / "notes.txt").write_text("a draft\n")
    (project / "pkg").mkdir()
    return project


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout.decode()


async def test_a_runs_writes_and_edits_are_counted_listed_and_undone(
    start_daemon: DaemonFactory, env: dict[str, str], files: Path
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, files)
        session_id = await ws.new_session()
        sent = await ws.send(session_id, EDITS, model="scripted", allow=["write", "edit"])
        rc = await ws.events.until_complete(sent["run_id"])
        assert (rc["error"], rc["text"]) == (None, "done")
        assert rc["changes"] == 3
        listed = await client.call("run.changes", {"run_id": sent["run_id"]})
        assert [(f["path"], f["action"]) for f in listed["files"]] == [
            ("pkg/new.py", "created"),
            ("main.py", "changed"),
            ("notes.txt", "changed"),
        ]
        assert listed["files"][1]["diff"] == (
            "--- a/main.py\n+++ b/main.py\n@@ -1 +1 @@\n-print('hello')\n+print('hello, world')\n"
        )
        assert (files / "main.py").read_text() == "print('hello, world')\n"

    diff = await run_agentctl("diff", env=env, cwd=files)
    assert "+print('hello, world')\n" in ok(diff) and "+x = 1\n" in diff.stdout.decode()

    # The user goes on with one of the files the run left.
    (files / "notes.txt").write_text("a final\nand my own line\n")
    refused = await run_agentctl("undo", env=env, cwd=files)
    assert refused.returncode == 1
    assert "agentctl undo: notes.txt: changed since the run" in refused.stderr.decode()
    assert (files / "main.py").read_text() == "print('hello, world')\n"  # nothing undone
    assert (files / "pkg" / "new.py").exists()

    forced = await run_agentctl("undo", "--force", env=env, cwd=files)
    assert ok(forced) == (
        "removed pkg/new.py (the run created it)\n"
        "restored main.py\n"
        "restored notes.txt\n"
        f"undid run {sent['run_id']}: 3 files put back\n"
    )
    assert (files / "main.py").read_text() == "print('hello')\n"
    assert (files / "notes.txt").read_text() == "a draft\n"
    assert not (files / "pkg" / "new.py").exists()
    assert (files / "pkg").is_dir()  # the user's directory stays


async def test_agentctl_run_then_diff_and_undo_the_last_run_of_the_session(
    start_daemon: DaemonFactory, env: dict[str, str], files: Path
) -> None:
    start_daemon()
    run = await run_agentctl("run", "--yolo", "-m", "scripted", EDITS, env=env, cwd=files)
    assert ok(run).endswith("done\n")
    diff = await run_agentctl("diff", env=env, cwd=files)
    assert ok(diff).startswith("--- /dev/null\n+++ b/pkg/new.py\n")
    assert "3 files (1 created, 2 changed)" in diff.stderr.decode()
    undone = await run_agentctl("undo", env=env, cwd=files)
    assert "undid run" in ok(undone)
    assert sorted(os.listdir(files)) == ["main.py", "notes.txt", "pkg"]
    assert (files / "notes.txt").read_text() == "a draft\n"
    again = await run_agentctl("undo", env=env, cwd=files)
    assert "was already undone; nothing to undo" in ok(again)
