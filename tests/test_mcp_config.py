"""MCP servers from the configuration, through `agentctl run`: config.toml's [mcp.NAME], a project's trusted file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trio
from mcp_servers import START_WAIT, TOOLBOX
from support import WAIT, Daemon, DaemonFactory, gone, run_agentctl, write_config


def server_table(name: str, *args: str, extra: str = "") -> str:
    command = json.dumps([sys.executable, TOOLBOX, *args])
    return f"[mcp.{name}]\ncommand = {command}\n{extra}\n"


def scripted(*steps: list[dict[str, Any]]) -> list[str]:
    return ["--model", "scripted", json.dumps({"steps": [{"tool_calls": step} for step in steps]})]


async def run_tools(env: dict[str, str], project: Path, *args: str) -> list[tuple[str, str, str]]:
    """`agentctl run --json ARGS`: its tool calls as (name, status, summary), from the tool.finished it printed."""
    done = await run_agentctl("run", "--json", *args, env=env, cwd=project)
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.decode().splitlines()]
    return [
        (e["payload"]["name"], e["payload"]["status"], e["payload"]["summary"])
        for e in printed
        if e["type"] == "tool.finished"
    ]


async def until_ready(daemon: Daemon, project: Path, name: str, timeout: float = START_WAIT) -> dict[str, Any]:
    """Open the project's workspace and wait until `name` is ready: its view from mcp.list."""
    async with daemon.client() as client:
        ws = await client.call("workspace.open", {"path": str(project)})
        with trio.fail_after(timeout):
            while True:
                listed = await client.call("mcp.list", {"workspace_id": ws["id"]})
                view = next(s for s in listed["servers"] if s["name"] == name)
                if view["state"] == "ready":
                    return view  # type: ignore[no-any-return]
                await trio.sleep(0.05)


async def test_agentctl_run_calls_a_configured_server_that_its_allow_lets_through(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    write_config(env, server_table("box", extra='allow = ["add"]'))
    await until_ready(daemon, project, "box")
    add = [{"name": "mcp__box__add", "arguments": {"a": 5, "b": 6}}]
    assert await run_tools(env, project, *scripted(add)) == [("mcp__box__add", "ok", "11")]
    # Not allowed by the server's table: asked, and agentctl run with no one to ask denies.
    echo = [{"name": "mcp__box__echo", "arguments": {"text": "hi"}}]
    assert await run_tools(env, project, *scripted(echo)) == [
        ("mcp__box__echo", "denied", 'denied: box: echo {"text":"hi"}')
    ]


async def test_a_call_that_never_answers_ends_at_its_call_timeout(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    write_config(env, server_table("box", extra="call_timeout = 1"))
    await until_ready(daemon, project, "box")
    started = trio.current_time()
    ((name, status, summary),) = await run_tools(env, project, "--yolo", *scripted([{"name": "mcp__box__never"}]))
    assert (name, status) == ("mcp__box__never", "error")
    assert summary.startswith("MCP server 'box' did not answer within 1 s (call_timeout in its configuration)")
    assert trio.current_time() - started < WAIT


async def test_a_run_waits_at_most_mcp_wait_for_a_server_starting(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    write_config(env, "[agent]\nmcp_wait = 0.5\n\n" + server_table("slow", "--start-delay", "20"))
    started = trio.current_time()
    ((_name, status, summary),) = await run_tools(env, project, "--yolo", *scripted([{"name": "mcp__slow__add"}]))
    assert status == "error" and summary.startswith("unknown tool 'mcp__slow__add'")
    assert trio.current_time() - started < 12


async def test_a_server_that_does_not_start_in_time_or_at_all_is_failed_and_retried(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    write_config(
        env,
        server_table("slow", "--start-delay", "20", extra="startup_timeout = 0.5")
        + '[mcp.missing]\ncommand = ["agentd-test-no-such-program"]\n\n'
        + '[mcp.off]\ncommand = ["true"]\nenabled = false\n',
    )
    async with daemon.client() as client:
        ws = await client.call("workspace.open", {"path": str(project)})
        with trio.fail_after(START_WAIT):
            while True:
                views = {s["name"]: s for s in (await client.call("mcp.list", {"workspace_id": ws["id"]}))["servers"]}
                if views["slow"]["restarts"] >= 1 and views["missing"]["restarts"] >= 1:
                    break
                await trio.sleep(0.05)
    assert views["slow"]["error"] == "it did not start within 0.5 s (startup_timeout in its configuration)"
    assert views["missing"]["error"] == "cannot start 'agentd-test-no-such-program': No such file or directory"
    assert views["off"]["state"] == "disabled"
    status = await run_agentctl("mcp", "--json", env=env, cwd=project)
    assert {s["name"] for s in json.loads(status.stdout)["servers"]} == {"slow", "missing", "off"}


async def test_a_project_server_starts_only_once_the_file_is_trusted_and_stops_when_it_changes(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    starts = short_tmp / "starts"
    config = project / ".agentd" / "config.toml"
    config.parent.mkdir()
    config.write_text(server_table("proj", "--starts", str(starts)))
    async with daemon.client() as client:
        ws = await client.call("workspace.open", {"path": str(project)})
        listed = await client.call("mcp.list", {"workspace_id": ws["id"]})
        assert [(s["name"], s["state"]) for s in listed["servers"]] == [("proj", "untrusted")]
        assert listed["project_trusted"] is False
        ((_name, status, summary),) = await run_tools(env, project, "--yolo", *scripted([{"name": "mcp__proj__add"}]))
        assert status == "error" and summary.startswith("unknown tool 'mcp__proj__add'")
        assert not starts.exists(), "an untrusted project file started its server"
        trusted = await run_agentctl("mcp", "trust", env=env, cwd=project)
        assert trusted.returncode == 0, trusted.stderr
        await until_ready(daemon, project, "proj")
        add = [{"name": "mcp__proj__add", "arguments": {"a": 1, "b": 2}}]
        assert await run_tools(env, project, "--yolo", *scripted(add)) == [("mcp__proj__add", "ok", "3")]
        # A change to the file (a git pull, say) is not trusted: its server stops at the next run.
        config.write_text(server_table("proj", "--starts", str(starts), extra="call_timeout = 5"))
        ((_name, status, summary),) = await run_tools(env, project, "--yolo", *scripted(add))
        assert status == "error" and summary.startswith("unknown tool 'mcp__proj__add'")
        listed = await client.call("mcp.list", {"workspace_id": ws["id"]})
        assert [(s["name"], s["state"]) for s in listed["servers"]] == [("proj", "untrusted")]
    (pid,) = (int(p) for p in starts.read_text().split())
    assert await gone(pid)


async def test_removing_a_server_from_config_toml_stops_it_at_the_next_run(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    daemon = start_daemon()
    starts = short_tmp / "starts"
    write_config(env, server_table("box", "--starts", str(starts)))
    await until_ready(daemon, project, "box")
    (pid,) = (int(p) for p in starts.read_text().split())
    write_config(env, "")
    ((_name, status, summary),) = await run_tools(env, project, "--yolo", *scripted([{"name": "mcp__box__add"}]))
    assert status == "error" and summary.startswith("unknown tool 'mcp__box__add'")
    assert await gone(pid)


async def test_agentctl_run_says_when_a_server_fails_during_the_run(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    # The run's first turn waits for the server's first start, which fails meanwhile.
    config = "[agent]\nmcp_wait = 8\n\n" + server_table("slow", "--start-delay", "20", extra="startup_timeout = 1")
    write_config(env, config)
    done = await run_agentctl("run", "--yolo", *scripted([{"name": "mcp__slow__add"}]), env=env, cwd=project)
    assert done.returncode == 0, done.stderr
    told = [line for line in done.stderr.decode().splitlines() if "MCP server" in line]
    assert told == [
        "agentctl run: MCP server slow failed: it did not start within 1 s (startup_timeout in its configuration);"
        " starting it again in 1 s"
    ]
    quiet = await run_agentctl("run", "-q", *scripted([]), env=env, cwd=project)
    assert b"MCP server" not in quiet.stderr
