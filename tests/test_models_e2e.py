"""Real providers through the whole daemon: configuration, a loopback provider, agentctl, usage and failures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio
from loopback_http import Reply, Streamed, start_loopback_server
from support import WAIT, DaemonFactory, configure_loopback, open_workspace, run_agentctl

from agentctl.client import RpcError
from agentd.protocol import RunRetry

KEY_ENV = "AGENTD_E2E_KEY"
KEY = "sk-e2e-3f9a-NEVER-PRINT-THIS"

HELLO = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'  # noqa: E501
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}\n\n'  # noqa: E501
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]}\n\n'  # noqa: E501
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}\n\n'  # noqa: E501
    b"data: [DONE]\n\n"
)


def configure(env: dict[str, str], base_url: str, extra: str = "") -> Path:
    return configure_loopback(env, base_url, key_env=KEY_ENV, key=KEY, max_retries=2, extra=extra)


async def test_run_with_a_configured_provider_streams_its_answer_and_records_usage(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, server.url)
        daemon = start_daemon()
        server.script(Streamed([HELLO]))
        result = await run_agentctl("run", "say hello", env=env, cwd=project)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"Hello there\n"
        assert result.stderr == b""  # a real default model: no echo note
        [request] = server.requests
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.json["model"] == "loop-model-1"
        assert request.json["messages"][-1] == {"role": "user", "content": "say hello"}
        async with daemon.client() as client:
            ws = await client.call("workspace.open", {"path": str(project)})
            [session] = await client.call("session.list", {"workspace_id": ws["id"]})
            assert (session["prompt_tokens"], session["completion_tokens"]) == (12, 2)
        nursery.cancel_scope.cancel()


async def test_a_rate_limited_run_retries_visibly_and_then_answers(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, server.url)
        daemon = start_daemon()
        server.script(
            Reply(429, {"retry-after": "0", "content-type": "application/json"}, b'{"error":{"message":"slow down"}}'),
            Streamed([HELLO]),
        )
        async with daemon.client() as client:
            ws = await open_workspace(client, project)
            result = await run_agentctl("run", "hello", env=env, cwd=project)
            assert result.returncode == 0, result.stderr
            assert result.stdout == b"Hello there\n"
            assert b"trying again" in result.stderr and b"429" in result.stderr
            retry = await ws.events.until(lambda e: e["type"] == "run.retry")
            assert retry["payload"]["attempt"] == 2
            assert set(retry["payload"]) == {f.name for f in attrs.fields(RunRetry)}
        assert len(server.requests) == 2
        nursery.cancel_scope.cancel()


async def test_an_authentication_failure_names_provider_and_variable_and_never_the_key(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, server.url)
        daemon = start_daemon()
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}}).encode()
        server.script(Reply(401, {"content-type": "application/json"}, body))
        result = await run_agentctl("run", "hello", env=env, cwd=project)
        assert result.returncode == 1
        assert b"'loop'" in result.stderr and KEY_ENV.encode() in result.stderr
        assert KEY.encode() not in result.stderr
        assert KEY not in daemon.log()
        nursery.cancel_scope.cancel()


async def test_models_lists_the_configuration_without_secrets(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    configure(env, "http://127.0.0.1:9", extra='headers = { "X-Team" = "secret-team-token" }\n')
    start_daemon()
    result = await run_agentctl("models", "--json", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["default"] == "quick" and listed["default_is_fallback"] is False
    names = {m["name"] for m in listed["models"]}
    assert {"echo", "scripted", "quick"} <= names
    assert KEY.encode() not in result.stdout and b"secret-team-token" not in result.stdout
    human = await run_agentctl("models", env=env, cwd=project)
    assert b"quick" in human.stdout and b"loop/loop-model-1" in human.stdout


async def check_config(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(WAIT):
        return await trio.run_process(
            [sys.executable, "-m", "agentd", "--check-config", *args],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def stop_autostarted(env: dict[str, str]) -> None:
    """`agentctl stop`, and wait until that daemon's process is gone: the next command starts a new one."""
    status = await run_agentctl("status", env=env)
    found = re.search(rb"^pid: (\d+)$", status.stdout, re.MULTILINE)
    if found is None:
        return  # none runs
    stop = await run_agentctl("stop", env=env)
    assert stop.returncode == 0, stop.stderr
    try:
        pidfd = os.pidfd_open(int(found.group(1)))
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(WAIT):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


BROKEN = """default_model = "quick"

[providers.bad]
type = "carrier-pigeon"
base_url = "http://x"

[models.quick]
provider = "bad"
model = "m"
temperature = 0.2
"""


async def test_check_config_reports_each_mistake_with_its_line(env: dict[str, str]) -> None:
    path = Path(env["XDG_CONFIG_HOME"]) / "agentd" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('default_model = "nowhere"\n\n[providers.bad]\ntype = "carrier-pigeon"\nbase_url = "http://x"\n')
    result = await check_config(env)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert f"{path}:4:" in err and "carrier-pigeon" in err
    assert f"{path}:1:" in err


async def test_with_mistakes_in_the_file_agentctl_starts_a_daemon_built_in_models_run_and_others_list_every_mistake(
    project: Path, env: dict[str, str]
) -> None:
    path = Path(env["XDG_CONFIG_HOME"]) / "agentd" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(BROKEN)
    mistakes = [f"{path}:4: [providers.bad] type must be", f"{path}:10: [models.quick] has unknown key 'temperature'"]
    try:
        # No daemon runs: this one starts it, on a file with two mistakes.
        echo = await run_agentctl("run", "--model", "echo", "still here", env=env, cwd=project)
        assert echo.returncode == 0, echo.stderr
        assert echo.stdout == b"still here\n"
        scripted = await run_agentctl(
            "run", "--quiet", "--model", "scripted", '{"chunks": ["ok"]}', env=env, cwd=project
        )
        assert scripted.stdout == b"ok\n"

        for args in (("hello",), ("--model", "quick", "hello")):
            failed = await run_agentctl("run", *args, env=env, cwd=project)
            assert failed.returncode == 1, args
            err = failed.stderr.decode()
            assert "only the built-in models (echo, scripted) can run until they are fixed" in err, err
            for mistake in mistakes:
                assert mistake in err, (args, err)

        listed = json.loads((await run_agentctl("models", "--json", env=env, cwd=project)).stdout)
        assert [line.split(" must be")[0].split(" has unknown")[0] for line in listed["config_mistakes"]] == [
            f"{path}:4: [providers.bad] type",
            f"{path}:10: [models.quick]",
        ]
        assert listed["default"] is None
        human = await run_agentctl("models", env=env, cwd=project)
        assert all(f"agentctl: {mistake}" in human.stderr.decode() for mistake in mistakes)
        log = (Path(env["XDG_STATE_HOME"]) / "agentd" / "agentd.log").read_text()
        assert all(mistake in log for mistake in mistakes)
    finally:
        await stop_autostarted(env)
    assert (await check_config(env)).returncode == 1


async def test_with_nothing_configured_run_answers_with_echo_and_says_how_to_configure(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    start_daemon()
    result = await run_agentctl("run", "just echo", env=env, cwd=project)
    assert result.returncode == 0
    assert result.stdout == b"just echo\n"
    assert b"no model is configured" in result.stderr and b"OPENAI_API_KEY" in result.stderr
    quiet = await run_agentctl("run", "--quiet", "quietly", env=env, cwd=project)
    assert quiet.stderr == b""


async def test_with_only_ollama_host_the_note_says_what_it_offers_and_agentd_model_chooses_the_default(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        env["OLLAMA_HOST"] = server.url
        first = start_daemon()
        result = await run_agentctl("run", "still echo", env=env, cwd=project)
        assert result.stdout == b"still echo\n"
        assert result.stderr.decode().startswith(
            "agentctl run: OLLAMA_HOST is set: models are named ollama/NAME; choose one with --model or AGENTD_MODEL"
        )
        first.terminate()

        env["AGENTD_MODEL"] = "ollama/qwen2.5-coder"
        second = start_daemon()
        server.script(Streamed([HELLO]))
        chosen = await run_agentctl("run", "say hello", env=env, cwd=project)
        assert chosen.returncode == 0, chosen.stderr
        assert (chosen.stdout, chosen.stderr) == (b"Hello there\n", b"")
        second.terminate()

        # The flag wins over the variable.
        start_daemon("--model", "ollama/llama3.2")
        server.script(Streamed([HELLO]))
        assert (await run_agentctl("run", "hello", env=env, cwd=project)).returncode == 0
        assert [r.json["model"] for r in server.requests] == ["qwen2.5-coder", "llama3.2"]
        assert [r.path for r in server.requests] == ["/v1/chat/completions"] * 2
        nursery.cancel_scope.cancel()


async def test_agentd_model_naming_no_model_fails_default_runs_but_not_named_ones(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    env["AGENTD_MODEL"] = "ollama/qwen"
    start_daemon()
    failed = await run_agentctl("run", "hello", env=env, cwd=project)
    assert failed.returncode == 1
    assert b"AGENTD_MODEL 'ollama/qwen' names no model" in failed.stderr
    assert (await run_agentctl("run", "--model", "echo", "fine", env=env, cwd=project)).stdout == b"fine\n"
    assert (await check_config(env)).returncode == 1


async def test_a_key_exported_after_the_daemon_started_says_how_to_start_it_with_the_current_environment(
    project: Path, env: dict[str, str]
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, server.url)
        key = env.pop(KEY_ENV)
        try:
            started = await run_agentctl("run", "--model", "echo", "start it", env=env, cwd=project)
            assert started.returncode == 0, started.stderr
            env[KEY_ENV] = key  # `export` in the shell: the running daemon never sees it
            missing = await run_agentctl("run", "hello", env=env, cwd=project)
            assert missing.returncode == 1
            err = missing.stderr.decode()
            assert f"environment variable {KEY_ENV} is not set in agentd's environment" in err
            assert "agentd keeps the environment it started with: run `agentctl stop`" in err
            assert key not in err
            await stop_autostarted(env)
            # As the message says: the next command starts agentd with the environment it has.
            server.script(Streamed([HELLO]))
            again = await run_agentctl("run", "hello", env=env, cwd=project)
            assert (again.returncode, again.stdout) == (0, b"Hello there\n"), again.stderr
        finally:
            await stop_autostarted(env)
        nursery.cancel_scope.cancel()


async def test_an_edited_configuration_is_used_by_the_next_request_and_a_broken_edit_keeps_the_last_good_one(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        before = await client.call("models.list")
        assert (before["default"], before["default_is_fallback"]) == ("echo", True)

        # Written while the daemon runs: the next request sees it, no restart.
        path = configure(env, "http://127.0.0.1:9")
        after = await client.call("models.list")
        assert (after["default"], after["default_is_fallback"], after["source"]) == ("quick", False, str(path))
        assert (await client.call("initialize"))["default_model"] == "quick"

        # An edit with a mistake is logged, and what the file said before stays in use.
        path.write_text(path.read_text() + '\n[models.fresh]\nprovider = "nowhere"\nmodel = "m"\n')
        broken = await client.call("models.list")
        assert broken["config_mistakes"] == [
            f"{path}:14: [models.fresh] provider 'nowhere' is not defined (defined providers: loop)"
        ]
        assert broken == after | {"config_mistakes": broken["config_mistakes"]}
        assert f"{path} has mistakes; still using the configuration from before" in daemon.log()
        ws = await open_workspace(client, project)
        session = await client.call("session.create", {"workspace_id": ws.id})
        params = {"workspace_id": ws.id, "session_id": session["id"], "prompt": "hi", "model": "fresh"}
        with pytest.raises(RpcError) as refused:
            await client.call("agent.send", params)
        assert refused.value.code == 1
        assert "unknown model 'fresh'" in refused.value.message
        assert "the configuration file changed but has mistakes" in refused.value.message
        assert broken["config_mistakes"][0] in refused.value.message

        # Mended: the alias it adds is there.
        path.write_text(path.read_text().replace('"nowhere"', '"loop"'))
        names = {m["name"] for m in (await client.call("models.list"))["models"]}
        assert {"quick", "fresh"} <= names

        # Deleted: what the environment offers again (here, nothing: echo).
        path.unlink()
        assert (await client.call("models.list"))["default"] == "echo"


async def test_sighup_reads_the_configuration_again_and_does_not_stop_the_daemon(
    start_daemon: DaemonFactory, env: dict[str, str]
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        await client.call("ping")
        daemon.proc.send_signal(signal.SIGHUP)
        with trio.fail_after(WAIT):
            while "SIGHUP: reading the configuration again" not in daemon.log():
                await trio.sleep(0.02)
        assert await client.call("ping") == {}
    assert daemon.proc.poll() is None
