"""The Neovim plugin's commands and what the session buffer shows, in a real headless Neovim against a real agentd.

The harness is test_nvim.py's: a Lua steps script between its prelude and
epilogue. The steps here also capture what the plugin says (`vim.notify`),
and, where it matters that something was *not* sent, the requests the
plugin's connection sends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import trio
from support import WAIT, Daemon, open_workspace
from test_nvim import PLUGIN, lua_string, nvim_command, read_result, run_nvim, scripted
from test_nvim import pytestmark as pytestmark

# What the plugin says, kept (in `recorded.said`) instead of shown.
CAPTURE = """
local said = {}
result.recorded.said = said
vim.notify = function(message) table.insert(said, message) end
local function was_said(text)
  return function()
    for _, message in ipairs(said) do
      if message:find(text, 1, true) then return true end
    end
    return false
  end
end
local sent = {}
result.recorded.sent = sent
-- The methods the plugin's connection sends from now on.
local function watch_requests()
  local link = require('agentd.link')
  wait_for('the connection', function() return link.conn() ~= nil end)
  local conn = link.conn()
  local request = conn.request
  conn.request = function(self, method, args, callback)
    table.insert(sent, method)
    return request(self, method, args, callback)
  end
end
local function lines_of(path)
  local buf = vim.fn.bufnr(path)
  return vim.api.nvim_buf_get_lines(buf, 0, -1, false)
end
"""


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def tool_step(*calls: dict[str, Any]) -> dict[str, Any]:
    """A model turn of the scripted model that makes these tool calls."""
    return {"tool_calls": list(calls)}


def steps_prompt(*steps: dict[str, Any]) -> str:
    return lua_string(json.dumps({"steps": list(steps)}))


async def run_nvim_beside(
    short_tmp: Path,
    env: dict[str, str],
    daemon: Daemon,
    project: Path,
    steps: str,
    beside: Any,
) -> dict[str, Any]:
    """Neovim running `steps` while `beside(ws)` drives the daemon as another client of the project's workspace."""
    argv, nvim_env, out = nvim_command(short_tmp, env, daemon.socket_path, CAPTURE + steps)
    finished: list[subprocess.CompletedProcess[bytes]] = []
    with trio.fail_after(3 * WAIT):
        async with daemon.client() as client, trio.open_nursery() as nursery:
            await client.call("initialize", {"client_name": "other-client"})
            ws = await open_workspace(client, project)

            async def nvim() -> None:
                finished.append(
                    await trio.run_process(
                        argv, env=nvim_env, cwd=project, capture_stdout=True, capture_stderr=True, check=False
                    )
                )

            nursery.start_soon(nvim)
            await beside(ws)
    proc = finished[0]
    return read_result(proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace"), out)


def run(short_tmp: Path, env: dict[str, str], daemon: Daemon, project: Path, steps: str) -> dict[str, Any]:
    return run_nvim(short_tmp, env, daemon.socket_path, project, CAPTURE + steps)


# --- the session buffer ---------------------------------------------------------


def test_tool_calls_and_their_results_stream_into_the_buffer(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    (project / "notes.txt").write_text("alpha\nbeta\ngamma\ndelta\nepsilon\n")
    prompt = steps_prompt(
        {"chunks": ["looking"], **tool_step(call("view", path="notes.txt"))},
        {"chunks": ["five lines"]},
    )
    steps = f"""
    vim.cmd('Agent ' .. {prompt})
    wait_for('the run to end', ended)
    """
    result = run(short_tmp, env, daemon, project, steps)
    assert result["status"]["run"]["state"] == "done"
    assert result["status"]["run"]["text"] == "five lines"  # the last message's, as run.complete says
    body = result["buffer"][result["buffer"].index("") + 1 :]
    assert body == [
        "looking",
        "",
        "▸ view notes.txt (lines 1-5)",
        "  1 alpha",
        "  2 beta",
        "  3 gamma",
        "  … 2 more lines",
        "",
        "five lines",
    ]


async def test_agent_sessions_picks_a_session_and_shows_it_stored(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    (project / "notes.txt").write_text("one line\n")
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        other = await ws.new_session("not this one")
        await ws.events.until_complete((await ws.send(other, {"chunks": ["no"]}))["run_id"])
        chosen = await ws.new_session("this one")
        script = {"steps": [tool_step(call("view", path="notes.txt")), {"chunks": ["it says one line"]}]}
        await ws.events.until_complete((await ws.send(chosen, script))["run_id"])
    steps = f"""
    local offered
    vim.ui.select = function(items, opts, on_choice)
      offered = vim.tbl_map(opts.format_item, items)
      for _, item in ipairs(items) do
        if item.id == {lua_string(chosen)} then return on_choice(item) end
      end
      on_choice(nil)
    end
    vim.cmd('AgentSessions')
    wait_for('the session to show', function() return agentd.status().session_id == {lua_string(chosen)} end)
    wait_for('its buffer to fill', function()
      return vim.fn.bufwinid('agentd://' .. {lua_string(chosen)}) ~= -1
        and #vim.api.nvim_buf_get_lines(vim.fn.bufnr('agentd://' .. {lua_string(chosen)}), 0, -1, false) > 1
    end)
    record('offered', offered)
    record('stored', vim.api.nvim_buf_get_lines(vim.fn.bufnr('agentd://' .. {lua_string(chosen)}), 0, -1, false))
    -- The picked session is the current one: the next prompt continues it, in the same buffer.
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["continued"]))})
    wait_for('the run to end', ended)
    """
    result = await trio.to_thread.run_sync(run, short_tmp, env, daemon, project, steps)
    offered = result["recorded"]["offered"]
    assert len(offered) == 2
    assert "this one  (4 messages)" in offered[0] and offered[0].endswith(chosen)  # newest first
    assert "not this one  (2 messages)" in offered[1]
    assert result["recorded"]["stored"] == [
        "> " + json.dumps(script),
        "",
        '▸ view {"path": "notes.txt"} (lines 1-1)',
        "  1 one line",
        "",
        "it says one line",
    ]
    assert result["status"]["session_id"] == chosen
    assert result["status"]["run"]["state"] == "done"
    assert result["buffer"][: len(result["recorded"]["stored"])] == result["recorded"]["stored"]
    assert result["buffer"][-1] == "continued"


async def test_a_stored_run_that_did_not_finish_shows_how_it_ended(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session = await ws.new_session()
        failed = await ws.send(session, {"chunks": ["half"], "error": "broke"})
        await ws.events.until_complete(failed["run_id"])
        hung = await ws.send(session, {"chunks": ["waiting"], "hang": True})
        await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["run_id"] == hung["run_id"])
        await ws.cancel(session)
        await ws.events.until_complete(hung["run_id"])
    steps = f"""
    vim.ui.select = function(items, _opts, on_choice) on_choice(items[1]) end
    vim.cmd('AgentSessions')
    wait_for('its buffer to fill', function()
      local buf = vim.fn.bufnr('agentd://' .. {lua_string(session)})
      return buf ~= -1 and #vim.api.nvim_buf_get_lines(buf, 0, -1, false) > 1
    end)
    """
    result = await trio.to_thread.run_sync(run, short_tmp, env, daemon, project, steps)
    assert [line for line in result["buffer"] if line.startswith("[")] == ["[failed]", "[cancelled]"]
    assert result["buffer"][-3:] == ["waiting", "", "[cancelled]"]


def test_agent_new_starts_a_session_that_becomes_current(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    steps = f"""
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["first"]))})
    wait_for('the run to end', ended)
    record('first', agentd.status().session_id)
    vim.cmd('AgentNew')
    wait_for('a new session', function() return agentd.status().session_id ~= result.recorded.first end)
    record('new', agentd.status().session_id)
    record('shown', vim.api.nvim_buf_get_name(0))
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["second"]))})
    wait_for('the run to end', ended)
    """
    result = run(short_tmp, env, daemon, project, steps)
    first, new = result["recorded"]["first"], result["recorded"]["new"]
    assert new != first
    assert result["recorded"]["shown"] == f"agentd://{new}"
    assert f"agentd: new session {new}" in result["recorded"]["said"]
    assert result["status"]["session_id"] == new
    assert result["buffer_name"] == f"agentd://{new}"
    assert [line for line in result["buffer"] if not line.startswith(">")] == ["", "second"]


def test_agent_status_says_connection_workspace_session_and_run(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    steps = f"""
    vim.cmd('AgentStatus')
    vim.cmd('Agent ' .. {lua_string(scripted(chunks=["x"], error="it broke"))})
    wait_for('the run to end', ended)
    vim.cmd('AgentStatus')
    """
    result = run(short_tmp, env, daemon, project, steps)
    status = result["status"]
    said = [m for m in result["recorded"]["said"] if m.startswith("agentd: ") and "\n" in m]
    assert said[0] == "agentd: not connected\nno workspace yet (:Agent opens the project's)"
    assert said[1] == "\n".join(
        [
            f"agentd: connected to {daemon.socket_path}",
            f"workspace {status['workspace_id']} ({project})",
            f"session {status['session_id']}",
            f"run {status['run']['id']} error: it broke",
        ]
    )


# --- context --------------------------------------------------------------------


def test_a_range_goes_with_the_prompt_with_its_file_and_lines(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    (project / ".git").mkdir()
    (project / "src").mkdir()
    (project / "src" / "app.py").write_text("import os\ndef f():\n    return '```'\nprint(f())\n")
    steps = """
    agentd.setup({ socket = config.setup.socket, model = 'echo' })  -- echo answers with the prompt it got
    vim.cmd.edit('src/app.py')
    vim.api.nvim_buf_set_mark(0, '<', 2, 0, {})
    vim.api.nvim_buf_set_mark(0, '>', 3, 0, {})
    vim.cmd("'<,'>Agent explain this")
    wait_for('the run to end', ended)
    record('visual', agentd.status().run.text)
    vim.cmd.wincmd('p')
    vim.cmd('4Agent and this')
    wait_for('the run to end', ended)
    record('one_line', agentd.status().run.text)
    """
    result = run(short_tmp, env, daemon, project, steps)
    # The text holds three backticks, so the fence is four.
    assert result["recorded"]["visual"] == (
        "explain this\n\nsrc/app.py, lines 2-3:\n````python\ndef f():\n    return '```'\n````"
    )
    assert result["recorded"]["one_line"] == "and this\n\nsrc/app.py, line 4:\n```python\nprint(f())\n```"


# --- changed files, diff and undo ------------------------------------------------

WRITE_NOTES = steps_prompt(
    tool_step(call("write", path="notes.txt", content="new content, longer\n")), {"chunks": ["wrote"]}
)

ALLOW_ONCE = """
local asked = {}
result.recorded.asked = asked
vim.ui.select = function(items, opts, on_choice)
  table.insert(asked, { prompt = opts.prompt, kind = opts.kind, answers = vim.tbl_map(function(a)
    return { a.action, opts.format_item(a) }
  end, items) })
  on_choice(items[1])
end
"""


def test_a_run_that_writes_a_file_reloads_its_open_buffer(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    (project / "notes.txt").write_text("old\n")
    (project / "other.txt").write_text("mine\n")
    write_both = steps_prompt(
        tool_step(
            call("write", path="notes.txt", content="new content, longer\n"),
            call("write", path="other.txt", content="the run's\n"),
        ),
        {"chunks": ["wrote"]},
    )
    steps = f"""
    {ALLOW_ONCE}
    vim.cmd.edit('other.txt')
    vim.api.nvim_buf_set_lines(0, 0, -1, false, {{ 'unsaved typing' }})
    vim.cmd.edit('notes.txt')
    vim.cmd('Agent ' .. {write_both})
    wait_for('the run to end', ended)
    wait_for('the buffer to show the new content', function()
      return lines_of('notes.txt')[1] == 'new content, longer'
    end)
    wait_for('the warning', was_said('other.txt'))
    record('notes', lines_of('notes.txt'))
    record('other', lines_of('other.txt'))
    """
    result = run(short_tmp, env, daemon, project, steps)
    assert result["status"]["run"]["state"] == "done"
    assert (project / "notes.txt").read_text() == "new content, longer\n"
    assert result["recorded"]["notes"] == ["new content, longer"]
    assert result["recorded"]["other"] == ["unsaved typing"]  # a modified buffer is never reloaded under you
    assert (
        "agentd: the run changed other.txt, which you have unsaved changes to; :checktime to choose"
        in (result["recorded"]["said"])
    )
    assert result["recorded"]["asked"][1]["prompt"] == "agentd: write other.txt"
    assert result["recorded"]["asked"][:1] == [
        {
            "prompt": "agentd: write notes.txt",
            "kind": "agentd.permission",
            "answers": [
                ["allow", "Allow once"],
                ["allow_session", "Allow for this session"],
                ["deny", "Deny"],
                ["deny_session", "Deny for this session"],
            ],
        }
    ]


def test_diff_shows_the_last_runs_changes_and_undo_puts_them_back(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    (project / ".git").mkdir()
    (project / "notes.txt").write_text("old\n")
    steps = f"""
    {ALLOW_ONCE}
    vim.cmd.edit('notes.txt')
    vim.cmd('Agent ' .. {WRITE_NOTES})
    wait_for('the run to end', ended)
    vim.cmd.wincmd('p')
    vim.cmd.cd({lua_string(str(short_tmp))})  -- elsewhere: the project is the buffers' own
    vim.cmd('AgentDiff')
    wait_for('the diff', function() return vim.bo.filetype == 'diff' end)
    record('diff_name', vim.api.nvim_buf_get_name(0))
    record('diff', vim.api.nvim_buf_get_lines(0, 0, -1, false))
    vim.cmd('AgentUndo')  -- typed in the diff's buffer
    wait_for('the undo', was_said('undid run'))
    wait_for('the buffer to show the old content', function() return lines_of('notes.txt')[1] == 'old' end)
    vim.cmd('AgentUndo')
    wait_for('the second undo', was_said('already undone'))
    """
    result = run(short_tmp, env, daemon, project, steps)
    run_id = result["status"]["run"]["id"]
    assert result["recorded"]["diff_name"] == f"agentd://diff/{run_id}"
    assert result["recorded"]["diff"] == [
        "--- a/notes.txt",
        "+++ b/notes.txt",
        "@@ -1 +1 @@",
        "-old",
        "+new content, longer",
    ]
    said = result["recorded"]["said"]
    assert f"agentd: run {run_id}: 1 file (1 changed)" in said
    assert f"agentd: restored notes.txt\nundid run {run_id}: 1 file put back" in said
    assert f"agentd: run {run_id} was already undone; nothing to undo" in said
    assert (project / "notes.txt").read_text() == "old\n"


def test_undo_refuses_a_file_changed_since_the_run(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    notes = project / "notes.txt"
    notes.write_text("old\n")
    steps = f"""
    {ALLOW_ONCE}
    vim.cmd('Agent ' .. {WRITE_NOTES})
    wait_for('the run to end', ended)
    local f = assert(io.open({lua_string(str(notes))}, 'w'))
    f:write('edited by hand\\n')
    f:close()
    vim.cmd('AgentUndo')
    wait_for('the refusal', was_said('nothing undone'))
    vim.cmd('AgentUndo!')
    wait_for('the forced undo', was_said('undid run'))
    """
    result = run(short_tmp, env, daemon, project, steps)
    refusal = next(m for m in result["recorded"]["said"] if "nothing undone" in m)
    assert refusal == (
        "agentd: notes.txt: changed since the run (it is no longer as the run left it)\n"
        "nothing undone; :AgentUndo! puts back what it can, files changed since included"
    )
    assert notes.read_text() == "old\n"  # the forced undo put it back over the hand edit


def test_diff_and_undo_with_no_run_say_so(daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path) -> None:
    steps = """
    vim.cmd('AgentDiff')
    wait_for('diff to answer', was_said('no run to diff'))
    vim.cmd('AgentNew')
    wait_for('a session', function() return agentd.status().session_id ~= nil end)
    vim.cmd('AgentUndo')
    wait_for('undo to answer', was_said('nothing to undo'))
    """
    result = run(short_tmp, env, daemon, project, steps)
    said = result["recorded"]["said"]
    assert f"agentd: no session in {project}, so no run to diff" in said
    assert f"agentd: session {result['status']['session_id']} has no runs, so nothing to undo" in said


# --- permissions -----------------------------------------------------------------


async def answer_elsewhere(ws: Any, action: str = "allow") -> None:
    request = await ws.events.until(lambda e: e["type"] == "permission.request")
    answered = await ws.client.call(
        "permission.grant",
        {"workspace_id": ws.id, "request_id": request["payload"]["request_id"], "action": action},
    )
    assert answered == {"resolved": True}


async def test_a_request_answered_elsewhere_closes_its_picker(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    # Neovim's own vim.ui.select: the plugin asks in a float of its own, which it can close.
    steps = f"""
    local opened = false
    vim.api.nvim_create_autocmd('FileType', {{
      pattern = 'agentd_permission',
      callback = function() opened = true end,
    }})
    local function picker_open()
      for _, win in ipairs(vim.api.nvim_list_wins()) do
        if vim.bo[vim.api.nvim_win_get_buf(win)].filetype == 'agentd_permission' then return true end
      end
      return false
    end
    vim.cmd('Agent ' .. {WRITE_NOTES})
    watch_requests()
    wait_for('the run to end', ended)
    record('opened', opened)
    record('open_after', picker_open())
    """
    result = await run_nvim_beside(short_tmp, env, daemon, project, steps, answer_elsewhere)
    assert result["status"]["run"]["state"] == "done"
    assert result["recorded"]["opened"] is True
    assert result["recorded"]["open_after"] is False
    assert "agentd: write notes.txt: answered elsewhere: allow (by other-client)" in result["recorded"]["said"]
    assert "permission.grant" not in result["recorded"]["sent"]


async def test_an_answer_to_a_request_that_ended_elsewhere_is_not_sent(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    # A picker plugin's vim.ui.select, which cannot be closed: its late answer is dropped.
    steps = f"""
    local answer
    vim.ui.select = function(items, opts, on_choice)
      answer = function() on_choice(items[3]) end
    end
    vim.cmd('Agent ' .. {WRITE_NOTES})
    watch_requests()
    wait_for('the answer elsewhere', was_said('answered elsewhere'))
    answer()  -- the user answers the stale picker: deny
    wait_for('the run to end', ended)
    """

    async def beside(ws: Any) -> None:
        await answer_elsewhere(ws, "allow")

    result = await run_nvim_beside(short_tmp, env, daemon, project, steps, beside)
    assert result["status"]["run"]["state"] == "done"
    assert "permission.grant" not in result["recorded"]["sent"]
    assert (project / "notes.txt").read_text() == "new content, longer\n"  # allowed elsewhere, not denied late


def test_the_float_picker_answers_by_key(daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path) -> None:
    steps = f"""
    vim.api.nvim_create_autocmd('FileType', {{
      pattern = 'agentd_permission',
      callback = function()
        vim.schedule(function() vim.api.nvim_feedkeys('d', 'x', false) end)
      end,
    }})
    vim.cmd('Agent ' .. {WRITE_NOTES})
    watch_requests()
    wait_for('the run to end', ended)
    """
    result = run(short_tmp, env, daemon, project, steps)
    assert result["status"]["run"]["state"] == "done"
    assert result["recorded"]["sent"].count("permission.grant") == 1
    assert not (project / "notes.txt").exists()  # denied


def test_cancelling_the_run_closes_its_question(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    steps = f"""
    local function picker_open()
      for _, win in ipairs(vim.api.nvim_list_wins()) do
        if vim.bo[vim.api.nvim_win_get_buf(win)].filetype == 'agentd_permission' then return true end
      end
      return false
    end
    vim.cmd('Agent ' .. {WRITE_NOTES})
    wait_for('the question', picker_open)
    vim.cmd('AgentStatus')
    vim.cmd('AgentCancel')
    wait_for('the run to end', ended)
    wait_for('the question to close', function() return not picker_open() end)
    wait_for('the reason', was_said('the run was cancelled'))
    """
    result = run(short_tmp, env, daemon, project, steps)
    assert result["status"]["run"]["state"] == "cancelled"
    said = result["recorded"]["said"]
    assert any(m.endswith("\nwaiting for your answer: write notes.txt") for m in said), said
    assert "agentd: write notes.txt: the run was cancelled" in said


async def test_a_request_sent_again_is_not_asked_again_and_an_answer_is_repeated(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    # A resubscribe sends the requests still pending again: one being asked
    # about is not asked twice, and one answered (the answer may have been lost
    # with the connection) gets the same answer again.
    steps = f"""
    local asked = 0
    local held, request
    vim.ui.select = function(items, opts, on_choice)
      asked = asked + 1
      held = function() on_choice(items[2]) end
    end
    local permissions = require('agentd.permissions')
    vim.api.nvim_create_autocmd('User', {{
      pattern = 'AgentdEvent',
      callback = function(args)
        if args.data.type == 'permission.request' then
          request = args.data
          permissions.on_event(args.data)
        end
      end,
    }})
    vim.cmd('Agent ' .. {WRITE_NOTES})
    watch_requests()
    wait_for('the question', function() return held ~= nil end)
    held()
    permissions.on_event(request)
    wait_for('the run to end', ended)
    record('asked', asked)
    """
    result = await trio.to_thread.run_sync(run, short_tmp, env, daemon, project, steps)
    assert result["recorded"]["asked"] == 1
    assert result["recorded"]["sent"].count("permission.grant") == 2
    assert result["status"]["run"]["state"] == "done"
    assert not [m for m in result["recorded"]["said"] if "ended before" in m]


# --- :help ------------------------------------------------------------------------


def test_help_has_every_command(env: dict[str, str], project: Path, short_tmp: Path) -> None:
    docs = short_tmp / "help"
    shutil.copytree(PLUGIN / "doc", docs / "doc")
    tags = [":AgentSessions", ":AgentNew", ":AgentStatus", ":AgentDiff", ":AgentUndo", "agentd-context"]
    tags += ["agentd-permissions", "agentd-reload"]
    steps = f"""
    vim.opt.rtp:append({lua_string(str(docs))})
    vim.cmd.helptags({lua_string(str(docs / "doc"))})
    local found = {{}}
    for _, tag in ipairs(vim.json.decode({lua_string(json.dumps(tags))})) do
      local ok = pcall(vim.cmd.help, tag)
      found[tag] = ok and vim.fs.basename(vim.api.nvim_buf_get_name(0)) or 'missing'
      if ok then vim.cmd.helpclose() end
    end
    record('found', found)
    """
    result = run_nvim(short_tmp, env, None, project, steps)
    assert result["recorded"]["found"] == dict.fromkeys(tags, "agentd.txt")
