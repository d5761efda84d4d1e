"""The `agentctl` executable end to end: real processes, a real daemon, nothing mocked."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from support import (
    WAIT,
    Daemon,
    DaemonFactory,
    Workspace,
    agentctl_command,
    open_workspace,
    run_agentctl,
    run_into_closed_pipe,
)

import agentd
from agentctl.autostart import is_listening
from agentctl.client import Client
from agentd.daemon import DEFAULT_LOG_MAX_BYTES

# --- helpers ---------------------------------------------------------------------------


def autostart_log(env: dict[str, str]) -> Path:
    """Where a daemon started by `agentctl` logs."""
    return Path(env["XDG_STATE_HOME"]) / "agentd" / "agentd.log"


def listening_pids(env: dict[str, str]) -> list[int]:
    log = autostart_log(env)
    if not log.exists():
        return []
    return [int(pid) for pid in re.findall(r"agentd (\d+) listening", log.read_text(errors="replace"))]


def _is_agentd(pid: int) -> bool:
    try:
        return b"agentd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture(autouse=True)
def reap_autostarted(env: dict[str, str]) -> Iterator[None]:
    """A daemon `agentctl` started on its own is not the fixture's: end it if a test could not."""
    yield
    for pid in set(listening_pids(env)):
        if not _is_agentd(pid):
            continue
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if select.select([fd], [], [], 0)[0]:
                continue  # already exited
            os.kill(pid, signal.SIGTERM)
            if not select.select([fd], [], [], WAIT)[0]:
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(fd)


async def wait_pid_exit(pid: int) -> None:
    """Until process `pid` (not our child) has exited: its pidfd turns readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(WAIT):
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


def status_pid(stdout: bytes) -> int:
    match = re.search(rb"^pid: (\d+)$", stdout, re.MULTILINE)
    assert match is not None, stdout
    return int(match.group(1))


class Background:
    """An `agentctl` running in a nursery; its CompletedProcess once it exits."""

    def __init__(self) -> None:
        self.result: subprocess.CompletedProcess[bytes] | None = None
        self.done = trio.Event()

    async def finished(self) -> subprocess.CompletedProcess[bytes]:
        with trio.fail_after(WAIT):
            await self.done.wait()
        assert self.result is not None
        return self.result


async def start_agentctl(
    nursery: trio.Nursery, *args: str, env: dict[str, str], cwd: Path
) -> tuple[trio.Process, Background]:
    bg = Background()

    async def runner(task_status: trio.TaskStatus[trio.Process]) -> None:
        bg.result = await trio.run_process(
            [*agentctl_command(), *args],
            env=env,
            cwd=cwd,
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            task_status=task_status,
        )
        bg.done.set()

    proc: trio.Process = await nursery.start(runner)
    return proc, bg


def scripted(script: dict[str, Any]) -> list[str]:
    return ["--model", "scripted", json.dumps(script)]


# --- run: output and exit codes ------------------------------------------------------------


async def test_version_prints_the_version_and_exits_0(env: dict[str, str]) -> None:
    result = await run_agentctl("--version", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"agentctl {agentd.__version__}\n"


async def test_no_command_prints_help_and_exits_2(env: dict[str, str]) -> None:
    result = await run_agentctl(env=env)
    assert result.returncode == 2
    assert b"usage" in result.stderr


async def test_run_prints_the_echoed_prompt_and_exits_0(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("run", "hello", "world", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello world\n"


async def test_run_with_scripted_error_exits_1_with_the_error_on_stderr(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl(
        "run", *scripted({"chunks": ["partial"], "error": "the model fell over"}), env=env, cwd=project
    )
    assert result.returncode == 1
    assert result.stdout == b"partial\n"
    assert b"the model fell over" in result.stderr


async def test_run_with_unknown_model_exits_1_naming_the_model(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl("run", "--model", "no-such-model", "hi", env=env, cwd=project)
    assert result.returncode == 1
    assert b"no-such-model" in result.stderr
    assert result.stdout == b""


async def test_run_reads_the_prompt_from_stdin_when_no_args_are_given(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl("run", env=env, cwd=project, stdin=b"from the pipe\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"from the pipe\n"


async def test_run_with_no_args_and_empty_stdin_exits_2(project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("run", env=env, cwd=project, stdin=b"")
    assert result.returncode == 2
    assert b"empty" in result.stderr
    assert not listening_pids(env), "a usage error must not start a daemon"


async def test_run_with_no_args_and_stdin_a_terminal_exits_2(project: Path, env: dict[str, str]) -> None:
    leader, follower = os.openpty()
    try:
        with trio.fail_after(WAIT):
            result = await trio.run_process(
                [*agentctl_command(), "run"],
                env=env,
                cwd=project,
                stdin=follower,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 2
    assert b"no prompt given" in result.stderr


async def test_a_missing_cwd_is_a_usage_error_for_every_command(project: Path, env: dict[str, str]) -> None:
    missing = project / "nope"
    for command in (
        ["run", "--cwd", str(missing), "hi"],
        ["sessions", "--cwd", str(missing)],
        ["cancel", "--cwd", str(missing)],
    ):
        result = await run_agentctl(*command, env=env, cwd=project)
        assert result.returncode == 2, command
        assert result.stderr == f"agentctl {command[0]}: --cwd: not a directory: {missing}\n".encode()
    assert not is_listening(Path(env["AGENTD_SOCKET"])), "a usage error must not start a daemon"


async def test_run_exits_0_when_stdout_reader_went_away(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    result = await run_into_closed_pipe("run", "many words for a closed pipe", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr and b"Exception" not in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
async def test_socket_option_is_accepted_before_and_after_the_subcommand(
    where: str, daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    env = {k: v for k, v in env.items() if k != "AGENTD_SOCKET"}
    sock = ["--socket", str(daemon.socket_path)]

    def argv(*command: str) -> list[str]:
        return [*sock, *command] if where == "before" else [command[0], *sock, *command[1:]]

    status = await run_agentctl(*argv("status"), env=env, cwd=project)
    assert status.returncode == 0, status.stderr
    assert status_pid(status.stdout) == daemon.proc.pid

    result = await run_agentctl(*argv("run", "via", "the", "flag"), env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"via the flag\n"
    # Served by the fixture's daemon: nothing was started at the default path.
    assert not (Path(env["XDG_RUNTIME_DIR"]) / "agentd" / "agentd.sock").exists()
    assert not listening_pids(env)


@pytest.mark.parametrize("command", [["run", "hi"], ["status"]], ids=["run", "status"])
@pytest.mark.parametrize("socket_kind", ["under_a_file", "too_long"])
async def test_unusable_socket_path_exits_3_without_a_traceback(
    command: list[str], socket_kind: str, short_tmp: Path, project: Path, env: dict[str, str]
) -> None:
    if socket_kind == "under_a_file":
        (short_tmp / "a-file").write_text("")
        sock = short_tmp / "a-file" / "agentd.sock"
    else:
        sock = short_tmp / ("s" * 120)
    result = await run_agentctl("--socket", str(sock), *command, env=env, cwd=project)
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == 3
    assert result.stderr.startswith(f"agentctl {command[0]}: ".encode())


async def test_json_prints_one_event_of_this_run_per_line_ending_with_run_complete(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl("run", "--json", "alpha", "beta", "gamma", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) for e in events)
    last = events[-1]
    assert last["type"] == "run.complete"
    run_id = last["payload"]["run_id"]
    assert last["payload"]["text"] == "alpha beta gamma"
    assert last["payload"]["error"] is None and last["payload"]["cancelled"] is False
    assert all(e["payload"]["run_id"] == run_id for e in events), events
    types = [e["type"] for e in events]
    assert types.count("run.complete") == 1
    assert "run.started" in types
    deltas = [e["payload"]["text"] for e in events if e["type"] == "message.delta"]
    assert "".join(deltas) == "alpha beta gamma"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)


# --- run: sessions and workspaces ------------------------------------------------------------


async def messages(ws: Workspace, session_id: str) -> list[tuple[str, str]]:
    found = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    return [(m["role"], m["text"]) for m in found]


async def test_run_with_session_continues_that_session(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    session_id = await ws.new_session("given")
    for prompt in ("first prompt", "second prompt"):
        result = await run_agentctl("run", "--session", session_id, prompt, env=env, cwd=project)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{prompt}\n".encode()
    assert await messages(ws, session_id) == [
        ("user", "first prompt"),
        ("assistant", "first prompt"),
        ("user", "second prompt"),
        ("assistant", "second prompt"),
    ]
    sessions = await ws.client.call("session.list", {"workspace_id": ws.id})
    assert [s["id"] for s in sessions] == [session_id]


async def test_run_continue_picks_the_most_recently_updated_session(
    ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    older = await ws.new_session("older")
    newer = await ws.new_session("newer")
    # The older session becomes the most recently updated one.
    result = await run_agentctl("run", "--session", older, "one", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    result = await run_agentctl("run", "--continue", "two", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"two\n"
    assert await messages(ws, older) == [
        ("user", "one"),
        ("assistant", "one"),
        ("user", "two"),
        ("assistant", "two"),
    ]
    assert await messages(ws, newer) == []
    sessions = await ws.client.call("session.list", {"workspace_id": ws.id})
    assert len(sessions) == 2


async def test_run_continue_without_sessions_creates_one(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("run", "--continue", "fresh", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    sessions = await ws.client.call("session.list", {"workspace_id": ws.id})
    assert len(sessions) == 1
    assert await messages(ws, sessions[0]["id"]) == [("user", "fresh"), ("assistant", "fresh")]


async def test_run_new_session_is_titled_with_the_prompt(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("run", "a title worth keeping", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    sessions = await ws.client.call("session.list", {"workspace_id": ws.id})
    assert [s["title"] for s in sessions] == ["a title worth keeping"]


async def test_run_with_unknown_session_exits_1_with_not_found(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl("run", "--session", "ses_does_not_exist", "hi", env=env, cwd=project)
    assert result.returncode == 1
    assert b"no session matches" in result.stderr
    assert b"ses_does_not_exist" in result.stderr


async def test_run_with_cwd_opens_that_workspace(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    # A relative --cwd is resolved against agentctl's own directory.
    relative = os.path.relpath(project, elsewhere)
    result = await run_agentctl("run", "--json", "--cwd", relative, "in the project", env=env, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert {e["workspace_id"] for e in events} == {ws.id}
    sessions = await ws.client.call("session.list", {"workspace_id": ws.id})
    assert [s["title"] for s in sessions] == ["in the project"]
    other = await ws.client.call("workspace.open", {"path": str(elsewhere)})
    assert other["id"] != ws.id
    assert await ws.client.call("session.list", {"workspace_id": other["id"]}) == []


# --- run: auto-start ---------------------------------------------------------------------------


async def test_run_starts_a_daemon_when_none_runs(project: Path, env: dict[str, str]) -> None:
    assert not is_listening(Path(env["AGENTD_SOCKET"]))
    result = await run_agentctl("run", "started", "for", "me", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"started for me\n"
    log = autostart_log(env)
    assert log.exists()
    pids = listening_pids(env)
    assert len(pids) == 1, log.read_text()

    status = await run_agentctl("status", env=env)
    assert status.returncode == 0, status.stderr
    assert status_pid(status.stdout) == pids[0]

    stop = await run_agentctl("stop", env=env)
    assert stop.returncode == 0, stop.stderr
    await wait_pid_exit(pids[0])
    assert (await run_agentctl("status", env=env)).returncode == 3


async def test_a_daemon_log_grown_past_its_limit_is_set_aside_when_the_next_daemon_starts(
    project: Path, env: dict[str, str]
) -> None:
    log = autostart_log(env)
    log.parent.mkdir(parents=True)
    old = b"an old daemon's line\n" * (DEFAULT_LOG_MAX_BYTES // 20)
    log.write_bytes(old)
    result = await run_agentctl("run", "hello", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert log.with_name("agentd.log.1").read_bytes() == old
    assert b"old daemon" not in log.read_bytes()
    [first] = listening_pids(env)
    assert (await run_agentctl("stop", env=env)).returncode == 0
    await wait_pid_exit(first)
    # Under the limit, the next daemon appends.
    assert (await run_agentctl("run", "again", env=env, cwd=project)).returncode == 0
    pids = listening_pids(env)
    assert len(pids) == 2 and pids[0] == first
    assert (await run_agentctl("stop", env=env)).returncode == 0
    await wait_pid_exit(pids[1])


async def test_concurrent_runs_auto_start_exactly_one_daemon(project: Path, env: dict[str, str]) -> None:
    results: dict[int, subprocess.CompletedProcess[bytes]] = {}

    async def one(i: int) -> None:
        results[i] = await run_agentctl("run", f"client {i} says hi", env=env, cwd=project)

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(one, i)

    for i, result in sorted(results.items()):
        assert result.returncode == 0, (i, result.stderr)
        assert result.stdout == f"client {i} says hi\n".encode()
    pids = listening_pids(env)
    assert len(pids) == 1, autostart_log(env).read_text()
    status = await run_agentctl("status", env=env)
    assert status.returncode == 0, status.stderr
    assert status_pid(status.stdout) == pids[0]
    stop = await run_agentctl("stop", env=env)
    assert stop.returncode == 0, stop.stderr
    await wait_pid_exit(pids[0])


async def test_run_replaces_the_stale_socket_of_a_killed_daemon(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    dead = start_daemon()
    dead.proc.kill()
    dead.proc.wait(timeout=WAIT)
    assert dead.socket_path.exists()  # left behind: SIGKILL leaves no time to clean up

    result = await run_agentctl("run", "after", "the", "crash", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"after the crash\n"
    pids = listening_pids(env)
    assert len(pids) == 1 and pids[0] != dead.proc.pid
    assert (await run_agentctl("stop", env=env)).returncode == 0
    await wait_pid_exit(pids[0])


# --- run: losing the daemon, Ctrl-C -------------------------------------------------------------


async def test_run_survives_its_daemon_being_killed_and_reports_the_run_interrupted(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        async with trio.open_nursery() as nursery:
            proc = await _start_piped(
                nursery, "run", *scripted({"chunks": ["partial"], "hang": True}), env=env, cwd=project
            )
            seen = await _read_until(proc, b"partial")
            await ws.events.until(lambda e: e["type"] == "message.delta")
            daemon.proc.kill()
            # agentctl starts a new daemon, which finishes the run a crash left
            # running as interrupted; agentctl reports that, once.
            code, out, err = await _finish(proc)
    await daemon.exited()
    try:
        assert b"Traceback" not in err, err.decode()
        assert code == 1, err
        assert b"interrupted: daemon restarted" in err
        assert seen + out == b"partial\n"
    finally:
        await run_agentctl("stop", env=env)


async def test_run_exits_3_when_no_daemon_can_be_reached_again(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    env = {**env, "AGENTCTL_RECONNECT_TIMEOUT": "1"}
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        async with trio.open_nursery() as nursery:
            proc = await _start_piped(nursery, "run", *scripted({"chunks": ["x"], "hang": True}), env=env, cwd=project)
            await ws.events.until(lambda e: e["type"] == "message.delta")
            daemon.proc.kill()
            await daemon.exited()
            # No new daemon can take the path: a regular file stands where its socket would.
            daemon.socket_path.unlink(missing_ok=True)
            daemon.socket_path.write_text("not a socket")
            code, _, err = await _finish(proc)
    assert b"Traceback" not in err, err.decode()
    assert code == 3, err
    assert b"lost the connection" in err


async def _cut_off_while_stopped(
    daemon: Daemon,
    client: Client,
    workspace_id: str,
    proc: trio.Process,
    before_resume: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Get agentctl's connection dropped by a daemon that stays up.

    agentctl is stopped (SIGSTOP) so it reads nothing; a flood of events in its
    workspace fills its socket, and the daemon cuts it off once a must-deliver
    event cannot reach it in time. Then it runs again and finds the connection gone.
    """
    proc.send_signal(signal.SIGSTOP)
    try:
        flood = await client.call("session.create", {"workspace_id": workspace_id, "title": "flood"})
        # Big in bytes, not in deltas: echo sends a few words per delta, and a
        # subscriber's queue merges deltas, but the prompt itself (in
        # message.created) and the answer (in run.complete) fill the socket.
        prompt = " ".join(["w"] * 400_000)
        await client.call("agent.send", {"workspace_id": workspace_id, "session_id": flood["id"], "prompt": prompt})
        # No event reaches us about someone else's connection: the daemon's log says it.
        with trio.fail_after(WAIT):
            while "disconnecting" not in daemon.log():
                await trio.sleep(0.02)
        if before_resume is not None:
            await before_resume()
    finally:
        proc.send_signal(signal.SIGCONT)


async def _finish(proc: trio.Process) -> tuple[int, bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = b"", b""
    with trio.fail_after(WAIT):
        while chunk := await proc.stdout.receive_some(65536):
            out += chunk
        while chunk := await proc.stderr.receive_some(65536):
            err += chunk
        return await proc.wait(), out, err


async def _start_piped(nursery: trio.Nursery, *args: str, env: dict[str, str], cwd: Path) -> trio.Process:
    proc: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            [*agentctl_command(), *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
    )
    return proc


async def _read_until(proc: trio.Process, marker: bytes) -> bytes:
    assert proc.stdout is not None
    seen = b""
    with trio.fail_after(WAIT):
        while marker not in seen:
            chunk = await proc.stdout.receive_some(1024)
            assert chunk, f"agentctl closed its stdout before printing {marker!r}"
            seen += chunk
    return seen


async def test_run_resumes_after_the_daemon_cut_it_off_and_ends_with_the_run(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    daemon = start_daemon("--subscriber-buffer", "16", "--must-deliver-timeout", "0.5")
    async with daemon.client() as client:
        ws = await client.call("workspace.open", {"path": str(project)})
        # This client subscribes to nothing, so it never lags behind the flood.
        async with trio.open_nursery() as nursery:
            proc = await _start_piped(nursery, "run", *scripted({"chunks": ["x"], "hang": True}), env=env, cwd=project)
            seen = await _read_until(proc, b"x")
            await _cut_off_while_stopped(daemon, client, ws["id"], proc)
            # agentctl reconnects and resubscribes from its last seq; the run ends while it follows.
            sessions = await client.call("session.list", {"workspace_id": ws["id"]})
            (ours,) = [s for s in sessions if s["title"].startswith('{"chunks"')]
            await client.call("agent.cancel", {"workspace_id": ws["id"], "session_id": ours["id"]})
            code, out, err = await _finish(proc)
    assert b"Traceback" not in err, err.decode()
    assert code == 1, err
    assert b"run cancelled" in err
    assert seen + out == b"x\n"


async def test_a_second_drop_after_a_good_reconnect_gets_a_whole_reconnect_window(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    env = {**env, "AGENTCTL_RECONNECT_TIMEOUT": "1"}
    daemon = start_daemon("--subscriber-buffer", "16", "--must-deliver-timeout", "0.5")
    async with daemon.client() as client:
        ws = await client.call("workspace.open", {"path": str(project)})
        async with trio.open_nursery() as nursery:
            proc = await _start_piped(nursery, "run", *scripted({"chunks": ["x"], "hang": True}), env=env, cwd=project)
            await _read_until(proc, b"x")
            await _cut_off_while_stopped(daemon, client, ws["id"], proc)
            # agentctl is back: its new connection joins ours.
            with trio.fail_after(WAIT):
                while (await client.call("server.status"))["clients"] != 2:
                    await trio.sleep(0.02)
            # Not synchronization: the first drop's window must be long over.
            await trio.sleep(1.5)
            daemon.proc.kill()
            # A fresh window: agentctl starts a daemon, which reports the run interrupted.
            code, _, err = await _finish(proc)
    await daemon.exited()
    try:
        assert b"Traceback" not in err, err.decode()
        assert code == 1, err
        assert b"interrupted: daemon restarted" in err
    finally:
        await run_agentctl("stop", env=env)


async def test_ctrl_c_cancels_the_run_and_exits_130(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        async with trio.open_nursery() as nursery:
            proc, bg = await start_agentctl(
                nursery, "run", *scripted({"chunks": ["x"], "hang": True}), env=env, cwd=project
            )
            delta = await ws.events.until(lambda e: e["type"] == "message.delta")
            run_id = delta["payload"]["run_id"]
            proc.send_signal(signal.SIGINT)
            result = await bg.finished()
        rc = await ws.events.until_complete(run_id)
    assert result.returncode == 130, result.stderr
    assert rc["cancelled"] is True and rc["error"] is None
    assert result.stdout == b"x\n"


async def test_ctrl_c_while_the_send_is_unanswered_still_cancels_the_run(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    import sqlite3

    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        # One store round trip: the event log's write of the session's events,
        # queued before it on the store's one thread, is done (were it held up by
        # the lock below, every store call would wait behind it).
        await client.call("session.list", {"workspace_id": ws.id})
        # Another process holds the database: the send waits on its store write,
        # unanswered, while everything agentctl does before it only reads.
        blocker = sqlite3.connect(Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            async with trio.open_nursery() as nursery:
                proc, bg = await start_agentctl(
                    nursery,
                    "run",
                    "--session",
                    session_id,
                    *scripted({"chunks": ["x"], "hang": True}),
                    env=env,
                    cwd=project,
                )
                # agentctl subscribes, then sends at once.
                with trio.fail_after(WAIT):
                    while (await client.call("server.status"))["subscriptions"] < 2:
                        await trio.sleep(0.01)
                proc.send_signal(signal.SIGINT)
                blocker.execute("ROLLBACK")
                result = await bg.finished()
        finally:
            blocker.close()
        assert result.returncode == 130, result.stderr
        # The run the daemon accepted after the Ctrl-C was cancelled, not left running.
        with trio.fail_after(WAIT):
            while (await client.call("session.get", {"workspace_id": ws.id, "session_id": session_id}))["busy"]:
                await trio.sleep(0.02)
        messages = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
        assert [m["finish_reason"] for m in messages if m["role"] == "assistant"] in ([], ["cancelled"])


async def test_ctrl_c_on_the_terminal_does_not_reach_the_daemon_agentctl_started(
    project: Path, env: dict[str, str]
) -> None:
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*agentctl_command(), "run", *scripted({"chunks": ["x"], "hang": True})],
                env=env,
                cwd=project,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
                start_new_session=True,  # a process group of its own, like a shell job
            )
        )
        assert proc.stdout is not None and proc.stderr is not None
        with trio.fail_after(WAIT):
            seen = b""
            while b"x" not in seen:
                chunk = await proc.stdout.receive_some(1024)
                assert chunk, "agentctl closed its stdout before the first delta"
                seen += chunk
        # The first delta came through the run: agentctl, and the daemon it started, are up.
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        with trio.fail_after(WAIT):
            stderr = b""
            while chunk := await proc.stderr.receive_some(65536):
                stderr += chunk
            code = await proc.wait()
    assert code == 130, stderr
    status = await run_agentctl("status", env=env)
    assert status.returncode == 0, "the auto-started daemon died with agentctl's Ctrl-C"
    assert (await run_agentctl("stop", env=env)).returncode == 0
    await wait_pid_exit(status_pid(status.stdout))


async def test_ctrl_c_on_a_queued_run_does_not_cancel_another_clients_active_run(
    ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    session_id = await ws.new_session()
    theirs = await ws.send(session_id, {"chunks": ["busy"], "hang": True})
    await ws.events.until(lambda e: e["type"] == "run.started" and e["payload"]["run_id"] == theirs["run_id"])
    async with trio.open_nursery() as nursery:
        proc, bg = await start_agentctl(nursery, "run", "--session", session_id, "wait your turn", env=env, cwd=project)
        # No event announces a queued run: ask until agentctl's prompt is in the queue.
        with trio.fail_after(WAIT):
            while not await ws.client.call("agent.queue", {"workspace_id": ws.id, "session_id": session_id}):
                await trio.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        result = await bg.finished()
    assert result.returncode == 130, result.stderr
    # The other client's run must still be the session's active run.
    cancel = await ws.cancel(session_id)
    assert cancel["run_id"] == theirs["run_id"], (
        "Ctrl-C on agentctl's queued prompt cancelled another client's active run"
    )
    rc = await ws.events.until_complete(theirs["run_id"])
    assert rc["cancelled"] is True


# --- status, sessions, cancel, stop --------------------------------------------------------------


async def test_status_prints_pid_and_version(daemon: Daemon, env: dict[str, str]) -> None:
    result = await run_agentctl("status", env=env)
    assert result.returncode == 0, result.stderr
    assert status_pid(result.stdout) == daemon.proc.pid
    assert f"version: {agentd.__version__}\n".encode() in result.stdout

    as_json = await run_agentctl("status", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    info = json.loads(as_json.stdout)
    assert info["pid"] == daemon.proc.pid and info["version"] == agentd.__version__


async def test_status_exits_3_when_no_daemon_runs(env: dict[str, str]) -> None:
    result = await run_agentctl("status", env=env)
    assert result.returncode == 3
    assert b"not running" in result.stderr
    assert not listening_pids(env), "status must not start a daemon"


async def test_sessions_lists_the_sessions_of_the_workspace(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    first = await ws.new_session("first title")
    result = await run_agentctl("run", "second title", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    second = next(s["id"] for s in await ws.client.call("session.list", {"workspace_id": ws.id}) if s["id"] != first)

    listed = await run_agentctl("sessions", env=env, cwd=project)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert len(lines) == 2
    # Most recently updated first.
    assert lines[0].startswith(second) and lines[0].endswith("second title")
    assert "2 msgs" in lines[0]
    assert lines[1].startswith(first) and lines[1].endswith("first title")

    as_json = await run_agentctl("sessions", "--json", "--cwd", str(project), env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert {s["id"] for s in json.loads(as_json.stdout)} == {first, second}


async def test_cancel_cancels_a_hanging_run_of_another_client(
    ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, {"chunks": ["x"], "hang": True})
    await ws.events.until(lambda e: e["type"] == "run.started" and e["payload"]["run_id"] == reply["run_id"])
    result = await run_agentctl("cancel", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert reply["run_id"].encode() in result.stdout
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["cancelled"] is True


async def test_cancel_with_nothing_running_says_so(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("cancel", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert b"nothing to cancel" in result.stdout


async def test_cancel_of_an_unknown_session_exits_1_with_not_found(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl("cancel", "--session", "ses_does_not_exist", env=env, cwd=project)
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == 1
    assert result.stderr.startswith(b"agentctl cancel: ") and b"no session matches" in result.stderr


async def test_stop_stops_the_daemon(daemon: Daemon, env: dict[str, str]) -> None:
    result = await run_agentctl("stop", env=env)
    assert result.returncode == 0, result.stderr
    assert b"agentd stopped" in result.stdout
    assert await daemon.exited() == 0


async def test_stop_if_idle_refuses_while_another_client_is_connected(daemon: Daemon, env: dict[str, str]) -> None:
    async with daemon.client() as client:
        await client.call("ping")
        result = await run_agentctl("stop", "--if-idle", env=env)
        assert b"Traceback" not in result.stderr, result.stderr.decode()
        assert result.returncode == 1
        assert result.stderr.startswith(b"agentctl stop: ") and b"not idle" in result.stderr
        assert b"without --if-idle" in result.stderr
        assert await client.call("ping") == {}
    assert daemon.proc.poll() is None


async def test_stop_if_idle_stops_an_idle_daemon(daemon: Daemon, env: dict[str, str]) -> None:
    result = await run_agentctl("stop", "--if-idle", env=env)
    assert result.returncode == 0, result.stderr
    assert await daemon.exited() == 0


async def test_stop_without_a_daemon_exits_0(env: dict[str, str]) -> None:
    result = await run_agentctl("stop", env=env)
    assert result.returncode == 0
    assert b"not running" in result.stdout


async def test_daemon_that_fails_to_start_is_reported_with_its_reason(
    short_tmp: Path, project: Path, env: dict[str, str]
) -> None:
    # A regular file where the socket should be: agentd refuses to start, and says why.
    # The daemon's exit races agentctl's look at it, so several attempts run at once.
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def attempt(i: int) -> None:
        plain = short_tmp / f"plain-{i}"
        plain.write_text("")
        results.append(await run_agentctl("--socket", str(plain), "run", "hi", env=env, cwd=project))

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(attempt, i)
    for result in results:
        assert result.returncode == 3, result.stderr
        assert b"is not a socket" in result.stderr, result.stderr.decode()


async def test_spinner_shows_on_a_terminal_and_is_erased_before_the_answer(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    leader, follower = os.openpty()
    try:
        prompt = json.dumps({"chunks": ["late answer"], "delay_ms": 400})
        with trio.fail_after(WAIT * 2):
            result = await trio.run_process(
                [*agentctl_command(), "run", "--model", "scripted", prompt],
                env=env,
                cwd=project,
                stdin=b"",
                capture_stdout=True,
                stderr=follower,
                check=False,
            )
        os.close(follower)
        follower = -1
        seen = b""
        while select.select([leader], [], [], 0)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert result.returncode == 0
    assert result.stdout == b"late answer\n"
    assert "⠋".encode() in seen
    assert seen.endswith(b"\r\x1b[K")


async def test_no_spinner_or_notes_when_stderr_is_not_a_terminal(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    prompt = json.dumps({"chunks": ["quiet"], "delay_ms": 300})
    result = await run_agentctl("run", "--model", "scripted", prompt, env=env, cwd=project)
    assert result.returncode == 0
    assert result.stdout == b"quiet\n"
    assert result.stderr == b""
