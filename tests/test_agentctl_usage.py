"""What a new user trips on, with the real agentctl and a real daemon.

Pipes, stdin with a prompt, refused prompts, usage, hints, queued prompts, detach and attach.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from support import (
    WAIT,
    Daemon,
    DaemonFactory,
    Events,
    Workspace,
    agentctl_command,
    open_workspace,
    run_agentctl,
    run_into_closed_pipe,
)

# A run that takes a while and then ends by itself: long enough to attach to mid-answer.
SLOW = {"chunks": ["one ", "two ", "three ", "four ", "five ", "six"], "delay_ms": 150}
SLOW_TEXT = "one two three four five six"


def scripted(script: dict[str, Any]) -> list[str]:
    return ["--model", "scripted", json.dumps(script)]


async def sessions_of(project: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    result = await run_agentctl("sessions", "--json", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# --- a closed stdout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["sessions"],
        ["sessions", "--all"],
        ["status"],
        ["models"],
        ["show", "SESSION"],
        ["sessions", "--json"],
        ["--version"],
    ],
    ids=["sessions", "sessions-all", "status", "models", "show", "sessions-json", "version"],
)
async def test_a_closed_stdout_ends_the_command_quietly_as_git_does(
    command: list[str], ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    session_id = await ws.new_session("something to print")
    command = [session_id if word == "SESSION" else word for word in command]
    result = await run_into_closed_pipe(*command, env=env, cwd=project)
    # 141: what a shell reports for a process SIGPIPE ended, as for `git log | head -1`.
    assert (result.returncode, result.stderr) == (141, b"")


# --- the prompt ------------------------------------------------------------------------------


async def test_the_argument_and_stdin_are_one_prompt_with_a_blank_line_between(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl("run", "summarize:", env=env, cwd=project, stdin=b"the notes\nof today\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"summarize:\n\nthe notes\nof today\n"


async def test_a_dash_alone_reads_the_prompt_from_stdin(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("run", "-", env=env, cwd=project, stdin=b"only the pipe")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"only the pipe\n"


async def test_an_empty_stdin_leaves_the_argument_alone(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("run", "just", "this", env=env, cwd=project, stdin=b"")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"just this\n"


# --- a refused prompt ----------------------------------------------------------------------------


async def test_an_unknown_model_leaves_no_session_behind(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    for _ in range(2):
        result = await run_agentctl("run", "-m", "no-such-model", "hi", env=env, cwd=project)
        assert result.returncode == 1
        assert result.stdout == b""
        assert b"agentctl run: model: unknown model 'no-such-model'" in result.stderr
    assert await sessions_of(project, env) == []


async def test_an_unknown_model_in_a_session_that_exists_keeps_the_session(
    ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    session_id = await ws.new_session("mine")
    result = await run_agentctl("run", "-s", session_id, "-m", "no-such-model", "hi", env=env, cwd=project)
    assert result.returncode == 1
    assert [s["id"] for s in await sessions_of(project, env)] == [session_id]


async def test_json_ends_with_an_error_line_when_the_prompt_is_refused(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl("run", "--json", "--model", "no-such-model", "hi", env=env, cwd=project)
    assert result.returncode == 1
    *_, last = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert last["type"] == "error" and last["exit_code"] == 1 and last["code"] == 1
    assert "no-such-model" in last["message"]


async def test_json_of_a_failed_run_ends_with_its_run_complete(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl(
        "run", "-j", *scripted({"chunks": ["partial"], "error": "the model fell over"}), env=env, cwd=project
    )
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    types = [e["type"] for e in events]
    assert types[-1] == "run.complete" and types.count("run.complete") == 1
    assert events[-1]["payload"]["error"] == "the model fell over"


# --- usage ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sessions", "extra"], b"agentctl sessions: error: unrecognized arguments: extra"),
        (["run", "-s", "x", "-c", "hi"], b"agentctl run: error: argument -c/--continue: not allowed with"),
        (["show"], b"agentctl show: error: the following arguments are required: SESSION"),
    ],
)
async def test_usage_errors_name_the_subcommand(argv: list[str], expected: bytes, env: dict[str, str]) -> None:
    result = await run_agentctl(*argv, env=env)
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr


async def test_short_flags_work_end_to_end(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    first = await run_agentctl("run", "-q", "-j", "first", env=env, cwd=project)
    assert first.returncode == 0, first.stderr
    assert first.stderr == b""
    session_id = json.loads(first.stdout.decode().splitlines()[-1])["payload"]["session_id"]
    again = await run_agentctl("run", "-c", "-m", "echo", "second", env=env, cwd=project)
    assert (again.returncode, again.stdout) == (0, b"second\n")
    third = await run_agentctl("run", "-s", session_id[:10], "third", env=env, cwd=project)
    assert (third.returncode, third.stdout) == (0, b"third\n")
    [listed] = await sessions_of(project, env)
    assert listed["id"] == session_id and listed["message_count"] == 6


# --- show ----------------------------------------------------------------------------------------


async def test_show_says_why_a_run_failed_and_that_one_was_cancelled(
    ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    failed = await run_agentctl(
        "run", *scripted({"chunks": ["partial"], "error": "the model fell over"}), env=env, cwd=project
    )
    assert failed.returncode == 1
    [session] = await sessions_of(project, env)
    reply = await ws.send(session["id"], {"chunks": ["half"], "hang": True})
    await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["run_id"] == reply["run_id"])
    await ws.cancel(session["id"])
    await ws.events.until_complete(reply["run_id"])
    done = await ws.send(session["id"], "fine")
    await ws.events.until_complete(done["run_id"])
    result = await run_agentctl("show", session["id"], env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "## assistant (error)\npartial\n(run failed: the model fell over)\n\n## user\n" in out
    assert "## assistant (cancelled)\nhalf\n(run cancelled)\n\n## user\n" in out
    assert out.endswith("## assistant\nfine\n")


# --- another directory's session -------------------------------------------------------------------


async def test_a_session_of_another_directory_is_found_and_named(
    ws: Workspace, project: Path, short_tmp: Path, env: dict[str, str]
) -> None:
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir()
    session_id = await ws.new_session("over there")
    for argv in (["show", session_id[:12]], ["rm", session_id], ["run", "-q", "-s", session_id[:12], "hi"]):
        result = await run_agentctl(*argv, env=env, cwd=elsewhere)
        assert result.returncode == 1, result.stderr
        assert (
            result.stderr
            == (
                f"agentctl {argv[0]}: session {session_id[:12] if argv[0] != 'rm' else session_id!r}"
                f" is not in this directory's workspace ({elsewhere}) but in that of {project}: pass --cwd {project}\n"
            ).encode()
        )
    nowhere = await run_agentctl("show", "ses_0000", env=env, cwd=elsewhere)
    assert nowhere.returncode == 1
    assert b"agentctl sessions --all" in nowhere.stderr
    listed = await run_agentctl("sessions", "--all", env=env, cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().startswith(f"{project}\n  {session_id}  ")
    groups = json.loads((await run_agentctl("sessions", "-a", "-j", env=env, cwd=elsewhere)).stdout)
    assert [(g["workspace"]["path"], [s["id"] for s in g["sessions"]]) for g in groups] == [
        (str(project), [session_id])
    ]


# --- a queued prompt -----------------------------------------------------------------------------


async def test_a_queued_prompt_says_so_and_behind_how_many(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    session_id = await ws.new_session()
    busy = await ws.send(session_id, {"chunks": ["busy"], "hang": True})
    await ws.events.until(lambda e: e["type"] == "run.started" and e["payload"]["run_id"] == busy["run_id"])
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                [*agentctl_command(), "run", "-s", session_id, "wait your turn"],
                env=env,
                cwd=project,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
                task_status=task_status,
            )
        )
        assert proc.stderr is not None and proc.stdout is not None
        said = b""
        with trio.fail_after(WAIT):
            while b"\n" not in said.partition(b"queued behind")[2]:
                chunk = await proc.stderr.receive_some(1024)
                assert chunk, said
                said += chunk
        assert f"agentctl run: queued behind 1 run of session {session_id}".encode() in said
        await ws.client.call(
            "agent.cancel", {"workspace_id": ws.id, "session_id": session_id, "run_id": busy["run_id"]}
        )
        with trio.fail_after(WAIT):
            out = b""
            while chunk := await proc.stdout.receive_some(1024):
                out += chunk
            assert await proc.wait() == 0
    assert out == b"wait your turn\n"


# --- detach and attach -----------------------------------------------------------------------------


async def test_a_detached_run_outlives_its_agentctl_and_attach_collects_it(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    # A grace far shorter than the run: only the run itself holds its workspace open.
    daemon = start_daemon("--idle-grace", "0.1")
    # Slow enough that it is surely still going when the detached agentctl has returned.
    slower = {**SLOW, "delay_ms": 400}
    detached = await run_agentctl("run", "--detach", "-q", *scripted(slower), env=env, cwd=project)
    assert detached.returncode == 0, detached.stderr
    run_id = detached.stdout.decode().strip()
    assert len(run_id) == 32
    async with daemon.client() as client:
        run = await client.call("run.get", {"run_id": run_id})
        # Accepted and returned at once: the run has most of its answer still to give.
        assert run["complete"] is None
    attached = await run_agentctl("attach", env=env, cwd=project)
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout == (SLOW_TEXT + "\n").encode()
    async with daemon.client() as client:
        rc = (await client.call("run.get", {"run_id": run_id}))["complete"]
    assert rc["cancelled"] is False and rc["text"] == SLOW_TEXT
    # A finished run: its answer again, by id, and the same exit.
    again = await run_agentctl("attach", run_id, env=env, cwd=project)
    assert (again.returncode, again.stdout) == (0, (SLOW_TEXT + "\n").encode())


async def test_attach_mid_answer_prints_every_word_once(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        detached = await run_agentctl("run", "-d", *scripted(SLOW), env=env, cwd=project)
        run_id = detached.stdout.decode().strip()
        # Past the first words, with more to come.
        await ws.events.until(
            lambda e: e["type"] == "message.delta" and e["payload"]["run_id"] == run_id and e["payload"]["offset"] > 0
        )
        attached = await run_agentctl("attach", run_id, env=env, cwd=project)
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout == (SLOW_TEXT + "\n").encode()


async def test_attach_exits_as_run_would_and_json_ends_with_run_complete(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    failing = {"chunks": ["partial ", "answer"], "delay_ms": 100, "error": "the model fell over"}
    detached = await run_agentctl("run", "-d", "-j", *scripted(failing), env=env, cwd=project)
    assert detached.returncode == 0, detached.stderr
    accepted = json.loads(detached.stdout)
    attached = await run_agentctl("attach", "-j", accepted["run_id"], env=env, cwd=project)
    assert attached.returncode == 1
    last = json.loads(attached.stdout.decode().splitlines()[-1])
    assert last["type"] == "run.complete" and last["payload"]["error"] == "the model fell over"
    plain = await run_agentctl("attach", accepted["run_id"], env=env, cwd=project)
    assert (plain.returncode, plain.stdout) == (1, b"partial answer\n")
    assert b"agentctl attach: the model fell over" in plain.stderr


async def test_attach_with_no_run_here_says_so(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("attach", env=env, cwd=project)
    assert result.returncode == 1
    assert b"agentctl attach: no run in this directory's workspace" in result.stderr
    unknown = await run_agentctl("attach", "nope", env=env, cwd=project)
    assert unknown.returncode == 1
    assert (
        b"agentctl attach: agentd knows no run 'nope' (a run id is what `agentctl run --detach` prints)"
        in unknown.stderr
    )


async def test_a_run_outlives_the_agentctl_that_a_closed_terminal_killed(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    daemon = start_daemon("--idle-grace", "0.1")
    async with daemon.client() as watcher:
        workspace = await watcher.call("workspace.open", {"path": str(project)})
        sub = await watcher.call("events.subscribe", {"workspace_id": workspace["id"]})
        events = Events(watcher, sub["subscription_id"])
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                lambda task_status: trio.run_process(
                    [*agentctl_command(), "run", *scripted(SLOW)],
                    env=env,
                    cwd=project,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                    task_status=task_status,
                )
            )
            delta = await events.until(lambda e: e["type"] == "message.delta")
            # The watcher's claim goes too: only the run can hold the workspace open now.
            await watcher.call("workspace.close", {"workspace_id": workspace["id"]})
            # What a closing terminal sends; agentctl does not catch it.
            proc.send_signal(signal.SIGHUP)
            with trio.fail_after(WAIT):
                assert await proc.wait() == -signal.SIGHUP
        run_id = delta["payload"]["run_id"]
        rc = await events.until_complete(run_id)
        assert rc["cancelled"] is False and rc["text"] == SLOW_TEXT
    attached = await run_agentctl("attach", run_id, env=env, cwd=project)
    assert (attached.returncode, attached.stdout) == (0, (SLOW_TEXT + "\n").encode())


async def test_json_ends_with_run_complete_when_agent_error_comes_first(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    # The one run whose agent.error precedes its run.complete: its model went
    # away (a configuration edit) while it waited in the queue.
    config = Path(env["XDG_CONFIG_HOME"]) / "agentd" / "config.toml"
    config.parent.mkdir(parents=True)
    provider = '[providers.loop]\ntype = "openai"\nbase_url = "http://127.0.0.1:9"\napi_key_env = "LOOP_KEY"\n'
    config.write_text(provider + '[models.soon-gone]\nprovider = "loop"\nmodel = "m"\n')
    env["LOOP_KEY"] = "k"
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        busy = await ws.send(session_id, {"chunks": ["busy"], "hang": True})
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                lambda task_status: trio.run_process(
                    [*agentctl_command(), "run", "-j", "-s", session_id, "-m", "soon-gone", "hi"],
                    env=env,
                    cwd=project,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    check=False,
                    task_status=task_status,
                )
            )
            with trio.fail_after(WAIT):
                while not await client.call("agent.queue", {"workspace_id": ws.id, "session_id": session_id}):
                    await trio.sleep(0.01)
            config.write_text(provider)
            assert "soon-gone" not in {m["name"] for m in (await client.call("models.list"))["models"]}
            await client.call(
                "agent.cancel", {"workspace_id": ws.id, "session_id": session_id, "run_id": busy["run_id"]}
            )
            assert proc.stdout is not None
            out = b""
            with trio.fail_after(WAIT):
                while chunk := await proc.stdout.receive_some(65536):
                    out += chunk
                assert await proc.wait() == 1
    types = [json.loads(line)["type"] for line in out.decode().splitlines()]
    assert types[-2:] == ["agent.error", "run.complete"], types
