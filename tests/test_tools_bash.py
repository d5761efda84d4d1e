"""bash: its output and exit code, its caps, and its whole process group killed on timeout or cancel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from support import WAIT
from tools_support import call, context

from agentd.tools import ToolContext, ToolError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return Path(os.path.realpath(tmp_path))


@pytest.fixture
def ctx(root: Path) -> ToolContext:
    return context(str(root), bash_kill_grace=0.5)


def alive(pid: int) -> bool:
    """Whether the process runs; a zombie (dead, not yet reaped by whoever adopted it) does not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def gone(pid: int) -> None:
    with trio.fail_after(WAIT):
        while alive(pid):
            await trio.sleep(0.02)


async def test_output_exit_code_and_working_directory(ctx: ToolContext, root: Path) -> None:
    out = await call(ctx, "bash", command="pwd; echo oops >&2; exit 3")
    assert out.output == f"exit code 3\nstdout:\n{root}\nstderr:\noops"
    assert out.summary == "exit 3"
    quiet = await call(ctx, "bash", command="true")
    assert quiet.output == "exit code 0\n(no output)"


async def test_stdin_is_empty(ctx: ToolContext) -> None:
    with trio.fail_after(WAIT):
        out = await call(ctx, "bash", command="cat; echo done")
    assert out.output == "exit code 0\nstdout:\ndone"


async def test_killed_by_a_signal_is_said(ctx: ToolContext) -> None:
    out = await call(ctx, "bash", command="kill -KILL $$")
    assert out.output.startswith("killed by signal SIGKILL")


async def test_each_stream_keeps_its_head_and_tail_within_the_cap(root: Path) -> None:
    ctx = context(str(root), max_output_chars=100)
    # 5 MB on stdout, a little on stderr: only 100 bytes of stdout are kept.
    out = await call(ctx, "bash", command="head -c 5000000 /dev/zero | tr '\\0' a; echo END; echo err >&2")
    stdout = out.output.split("stdout:\n", 1)[1].split("\nstderr:\n")[0]
    head, cut, tail = stdout.split("\n")
    assert head == "a" * 50
    assert cut == f"[... {5_000_004 - 100} bytes cut ...]"
    assert tail == "a" * 46 + "END"
    assert out.output.endswith("stderr:\nerr")


async def test_a_timeout_kills_the_group_children_included(ctx: ToolContext) -> None:
    with trio.fail_after(WAIT):
        out = await call(ctx, "bash", command="sleep 30 & echo $!; sleep 30", timeout=0.5)
    assert out.output.startswith("timed out after 0.5 s: the command and its children were killed")
    assert out.summary == "timed out"
    child = int(out.output.split("stdout:\n")[1])
    await gone(child)


async def test_a_child_that_ignores_sigterm_is_killed_too(ctx: ToolContext) -> None:
    command = "sh -c 'trap \"\" TERM; echo $$; sleep 30' & sleep 30"
    with trio.fail_after(WAIT):
        out = await call(ctx, "bash", command=command, timeout=0.5)
    await gone(int(out.output.split("stdout:\n")[1]))


async def test_cancelling_the_call_kills_the_group(ctx: ToolContext, root: Path) -> None:
    pidfile = root / "child.pid"
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                await call(ctx, "bash", command=f"sleep 30 & echo $! > {pidfile}; sleep 30")
                raise AssertionError("the call was not cancelled")

            nursery.start_soon(run)
            while not pidfile.exists() or not pidfile.read_text().strip():
                await trio.sleep(0.01)
            child = int(pidfile.read_text())
            assert alive(child)
            nursery.cancel_scope.cancel()
    await gone(child)


async def test_what_the_shell_leaves_running_does_not_outlive_the_call(ctx: ToolContext) -> None:
    with trio.fail_after(WAIT):
        out = await call(ctx, "bash", command="sleep 30 & echo $!")
    assert out.output.startswith("exit code 0")
    await gone(int(out.output.split("stdout:\n")[1]))


async def test_timeout_bounds(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="timeout must be at most 600 seconds, got 601"):
        await call(ctx, "bash", command="true", timeout=601)
    with pytest.raises(ToolError, match="timeout must be more than 0, got 0"):
        await call(ctx, "bash", command="true", timeout=0)


async def test_the_default_timeout_comes_from_the_limits(root: Path) -> None:
    ctx = context(str(root), bash_default_timeout=0.3, bash_kill_grace=0.1)
    with trio.fail_after(WAIT):
        out = await call(ctx, "bash", command="sleep 30")
    assert out.summary == "timed out"
