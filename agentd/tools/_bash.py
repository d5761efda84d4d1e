"""`bash`: a shell command in the workspace root, in a process group of its own, killed whole.

The command runs in a new session (so a new process group, whose id is the
shell's pid) with no standard input. Its output is read as it comes into
buffers that keep the first and last part of each stream and count the rest,
so a command printing gigabytes costs the daemon a few tens of kilobytes. When
the timeout passes or the call is cancelled, the group gets SIGTERM and, after
a short grace, SIGKILL: the shell's children die with it. When the shell exits
on its own, what it left running in its group is killed too, so nothing a call
starts outlives it (a process that makes a session of its own is beyond reach).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from functools import partial

import attrs
import trio

from ._base import ToolContext, ToolError, ToolOutput, ToolSpec

__all__ = ["BASH", "BashParams", "SHELL"]

# bash when there is one: models write bash; /bin/sh otherwise.
SHELL = shutil.which("bash") or "/bin/sh"
_READ_SIZE = 64 * 1024


@attrs.frozen
class BashParams:
    command: str = attrs.field(metadata={"description": "The command line, run by bash in the workspace root."})
    timeout: float | None = attrs.field(
        default=None,
        metadata={
            "description": "Seconds before the command and its children are killed (default 120, at most 600).",
            "exclusiveMinimum": 0,
        },
    )


class _Capture:
    """The head and the tail of a stream, `cap` bytes in all, and how many bytes between were dropped."""

    def __init__(self, cap: int) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.head_cap = cap // 2
        self.tail_cap = cap - self.head_cap
        self.dropped = 0

    def feed(self, data: bytes | bytearray) -> None:
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            cut = len(self.tail) - self.tail_cap
            if cut > 0:
                del self.tail[:cut]
                self.dropped += cut

    def text(self) -> str:
        if not self.dropped:
            return (self.head + self.tail).decode("utf-8", errors="replace")
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        return f"{head}\n[... {self.dropped} bytes cut ...]\n{tail}"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


async def _kill_group(grace: float, process: trio.Process) -> None:
    """run_process's deliver_cancel: the whole group, politely first."""
    _signal_group(process.pid, signal.SIGTERM)
    with trio.move_on_after(grace):
        await process.wait()
    _signal_group(process.pid, signal.SIGKILL)


async def _pump(stream: trio.abc.ReceiveStream, capture: _Capture) -> None:
    async with stream:
        while data := await stream.receive_some(_READ_SIZE):
            capture.feed(data)


def _report(returncode: int | None, timed_out: float | None, out: _Capture, err: _Capture) -> ToolOutput:
    if timed_out is not None:
        head = f"timed out after {timed_out:g} s: the command and its children were killed"
        summary = "timed out"
    elif returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        head = f"killed by signal {name}"
        summary = f"signal {name}"
    else:
        head = f"exit code {returncode}"
        summary = f"exit {returncode}"
    parts = [head]
    for label, capture in (("stdout", out), ("stderr", err)):
        if capture.head:
            parts.append(f"{label}:\n{capture.text().rstrip(chr(10))}")
    if len(parts) == 1:
        parts.append("(no output)")
    return ToolOutput("\n".join(parts), summary)


async def _run(ctx: ToolContext, params: BashParams) -> ToolOutput:
    limits = ctx.limits
    timeout = params.timeout if params.timeout is not None else limits.bash_default_timeout
    if timeout > limits.bash_max_timeout:
        raise ToolError(f"timeout must be at most {limits.bash_max_timeout:g} seconds, got {timeout:g}")
    out = _Capture(limits.max_output_chars)
    err = _Capture(limits.max_output_chars)
    process: trio.Process | None = None
    try:
        with trio.move_on_after(timeout) as timer:
            async with trio.open_nursery() as nursery:
                try:
                    process = await nursery.start(
                        partial(
                            trio.run_process,
                            [SHELL, "-c", params.command],
                            cwd=ctx.root,
                            env=ctx.environment,
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            start_new_session=True,
                            check=False,
                            deliver_cancel=partial(_kill_group, limits.bash_kill_grace),
                        )
                    )
                except OSError as exc:
                    raise ToolError(f"cannot run {SHELL}: {exc.strerror}") from None
                assert process.stdout is not None and process.stderr is not None
                nursery.start_soon(_pump, process.stdout, out)
                nursery.start_soon(_pump, process.stderr, err)
                await process.wait()
                # What the shell left running would hold the pipes open, and outlive the call.
                _signal_group(process.pid, signal.SIGKILL)
    finally:
        # A child that ignored SIGTERM outlives a shell that did not: run_process
        # stops delivering the cancel once the shell is gone, so finish it here.
        if process is not None:
            _signal_group(process.pid, signal.SIGKILL)
    assert process is not None
    return _report(process.returncode, timeout if timer.cancelled_caught else None, out, err)


BASH = ToolSpec(
    name="bash",
    description=(
        "Run a shell command (bash) in the workspace root, with no input, and get its exit code, stdout and "
        "stderr (each capped: the middle of a long output is cut). It is killed, children included, after "
        "`timeout` seconds. Prefer view, ls, glob, grep and edit for files."
    ),
    params=BashParams,
    kind="execute",
    run=_run,
    describe=lambda p: f"bash: {p.command}",
    subject=lambda p: p.command,
)
