"""The README's "From Python" examples, run as written against a real agentd they start themselves."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio
from support import WAIT

from agentctl.blocking import BlockingClient

README = Path(__file__).parent.parent / "README.md"


def python_examples() -> list[str]:
    text = README.read_text()
    section = text.split("\n### From Python\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


async def run_example(code: str, env: dict[str, str], cwd: Path) -> str:
    with trio.fail_after(WAIT * 3):
        proc = await trio.run_process(
            [sys.executable, "-c", code], env=env, cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
        )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


async def test_the_readmes_python_examples_run_as_written(env: dict[str, str], project: Path) -> None:
    trio_example, blocking_example = python_examples()
    try:
        # No daemon runs yet: the first example starts one, the second finds it.
        out = await run_example(trio_example, env, project)
        assert out == "Say hello\n"
        out = await run_example(blocking_example, env, project)
        lines = out.splitlines()
        assert lines[0] == "Say hello again stop"
        assert "run.complete" in [line.split()[-1] for line in lines[1:]]
    finally:
        socket = Path(env["AGENTD_SOCKET"])
        if socket.exists():
            with BlockingClient.connect(socket) as client:
                client.call("server.shutdown", timeout=WAIT)
