"""What agentctl refuses before it sends: text that is not UTF-8, a prompt over the daemon's limit, a directory gone.

Each is a usage error (exit 2) naming what is wrong, with nothing created in
the daemon, instead of a traceback or a closed connection.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio
from support import WAIT, DaemonFactory, agentctl_command, run_agentctl

# Bytes that are not UTF-8, as Python hands them to a program (and back to the OS).
LATIN1 = os.fsdecode(b"caf\xe9 au lait")


def no_daemon(env: dict[str, str]) -> bool:
    return not Path(env["AGENTD_SOCKET"]).exists()


async def test_a_prompt_argument_that_is_not_utf8_is_a_usage_error(project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("run", LATIN1, env=env, cwd=project)
    assert result.returncode == 2
    assert result.stderr == b"agentctl run: the prompt is not valid UTF-8 (byte 0xe9 at offset 3)\n"
    assert no_daemon(env), "a usage error must not start a daemon"


async def test_a_prompt_on_stdin_that_is_not_utf8_is_a_usage_error(project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("run", env=env, cwd=project, stdin="naïve\n".encode() + b"\xff\xfe")
    assert result.returncode == 2
    assert b"the prompt on stdin is not valid UTF-8 (byte 0xff at offset 7)" in result.stderr
    assert b"Traceback" not in result.stderr
    assert no_daemon(env)


async def test_an_option_that_is_not_utf8_is_named(project: Path, env: dict[str, str]) -> None:
    result = await run_agentctl("run", "--model", LATIN1, "hi", env=env, cwd=project)
    assert result.returncode == 2
    assert result.stderr == b"agentctl run: the model argument is not valid UTF-8 (byte 0xe9 at offset 3)\n"
    result = await run_agentctl("show", LATIN1, env=env, cwd=project)
    assert result.returncode == 2
    assert result.stderr == b"agentctl show: the session argument is not valid UTF-8 (byte 0xe9 at offset 3)\n"
    assert no_daemon(env)


async def test_a_current_directory_whose_path_is_not_utf8_asks_for_cwd(short_tmp: Path, env: dict[str, str]) -> None:
    odd = short_tmp / os.fsdecode(b"d\xff")
    odd.mkdir()
    result = await run_agentctl("run", "hi", env=env, cwd=odd)
    assert result.returncode == 2
    assert b"the current directory's path is not valid UTF-8 (byte 0xff at offset" in result.stderr
    assert b"pass --cwd" in result.stderr
    assert no_daemon(env)


async def test_a_current_directory_that_was_removed_asks_for_cwd(short_tmp: Path, env: dict[str, str]) -> None:
    gone = short_tmp / "gone"
    gone.mkdir()
    # The child starts in the directory, then finds it removed: as a shell left in a deleted directory does.
    script = f'cd {gone} && rmdir {gone} && exec "$@"'
    with trio.fail_after(WAIT):
        result = await trio.run_process(
            ["sh", "-c", script, "sh", *agentctl_command(), "run", "hi"],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr == b"agentctl run: the current directory no longer exists; pass --cwd\n"


async def test_a_prompt_over_the_daemons_size_limit_is_refused_before_any_session_exists(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    daemon = start_daemon("--max-message-size", "4096")
    result = await run_agentctl("run", "x" * 5000, env=env, cwd=project)
    assert result.returncode == 2
    assert result.stderr.endswith(
        b"the prompt is 5000 bytes, more than agentd takes in one request"
        b" (4096 bytes, set by agentd --max-message-size)\n"
    )
    # Nothing was created for it, and a prompt that fits still runs.
    async with daemon.client() as client:
        ws = await client.call("workspace.open", {"path": str(project)})
        assert await client.call("session.list", {"workspace_id": ws["id"]}) == []
    fits = await run_agentctl("run", "x" * 3000, env=env, cwd=project)
    assert fits.returncode == 0, fits.stderr
    assert fits.stdout == b"x" * 3000 + b"\n"
