"""Secrets in headers and URLs never leave the request: not in the run's error, the events, the database or the log.

The loopback provider plays one that echoes what it was sent back in its
error, as real ones do ("Incorrect API key provided: ...").
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import trio
from loopback_http import Reply, Streamed, start_loopback_server
from support import Daemon, DaemonFactory, configure_loopback, open_workspace, run_agentctl

from agentd.models import ProviderConfig

KEY_ENV = "AGENTD_SECRETS_KEY"
KEY = "sk-secrets-test-5b1d-KEY"
HEADER_SECRET = "hdr-secret-9c1e-NEVER-SHOWN"
URL_PASSWORD = "url-pass-7d2f-NEVER-SHOWN"
BASIC = base64.b64encode(f"someone:{URL_PASSWORD}".encode()).decode()

ANSWER = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"fine"},"finish_reason":null}]}\n\n'  # noqa: E501
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def configure(env: dict[str, str], base_url: str, extra: str = "") -> None:
    configure_loopback(env, base_url, key_env=KEY_ENV, key=KEY, extra=extra)


def everything_kept(env: dict[str, str], daemon: Daemon) -> dict[str, bytes]:
    """Where a secret could have been kept: each file of the data folder, its rows read back, and the log."""
    data = Path(env["XDG_DATA_HOME"]) / "agentd"
    kept = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    with sqlite3.connect(data / "agentd.db") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        kept["rows"] = repr([list(db.execute(f"SELECT * FROM {table}")) for table in tables]).encode()
    kept["log"] = daemon.log().encode()
    return kept


def assert_nowhere(secrets: list[str], places: dict[str, bytes]) -> None:
    for secret in secrets:
        for name, content in places.items():
            assert secret.encode() not in content, f"{secret!r} found in {name}"


async def test_a_header_value_echoed_by_the_provider_is_scrubbed_everywhere(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, server.url, extra=f'headers = {{ "X-Api-Key" = "{HEADER_SECRET}" }}\n')
        daemon = start_daemon("--log-level", "debug")
        body = json.dumps({"error": {"message": f"X-Api-Key {HEADER_SECRET} is not valid (key {KEY})"}}).encode()
        # In a response header too: the HTTP client's own debug log would show it.
        server.script(Reply(401, {"content-type": "application/json", "x-echo": HEADER_SECRET}, body))
        result = await run_agentctl("run", "--json", "hello", env=env, cwd=project)
        assert result.returncode == 1, result.stderr
        [request] = server.requests
        assert request.headers["x-api-key"] == HEADER_SECRET  # sent, for the provider only
        assert b"[header X-Api-Key]" in result.stdout + result.stderr and b"[API key]" in result.stdout + result.stderr
        assert_nowhere([HEADER_SECRET, KEY], {"stdout": result.stdout, "stderr": result.stderr})
        assert_nowhere([HEADER_SECRET, KEY], everything_kept(env, daemon))
        nursery.cancel_scope.cancel()


async def test_a_base_urls_userinfo_is_sent_as_basic_auth_and_never_shown(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        host = server.url.removeprefix("http://")
        configure(env, f"http://someone:{URL_PASSWORD}@{host}")
        daemon = start_daemon("--log-level", "debug")
        server.script(Streamed([ANSWER]))
        ok = await run_agentctl("run", "hello", env=env, cwd=project)
        assert ok.returncode == 0, ok.stderr
        assert server.requests[0].headers["authorization"] == f"Basic {BASIC}"
        echoed = f"bad credentials: Basic {BASIC} (password {URL_PASSWORD})"
        server.script(Reply(403, {"content-type": "text/plain"}, echoed.encode()))
        refused = await run_agentctl("run", "--json", "again", env=env, cwd=project)
        assert refused.returncode == 1, refused.stderr
        assert b"[URL credentials]" in refused.stdout + refused.stderr
        outputs = {"stdout": ok.stdout + refused.stdout, "stderr": ok.stderr + refused.stderr}
        assert_nowhere([URL_PASSWORD, BASIC], outputs)
        assert_nowhere([URL_PASSWORD, BASIC], everything_kept(env, daemon))
        nursery.cancel_scope.cancel()


async def test_cannot_connect_shows_the_url_without_its_userinfo(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    with trio.socket.socket() as unused:  # a port nothing listens on
        await unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    configure(env, f"http://someone:{URL_PASSWORD}@127.0.0.1:{port}/v1")
    daemon = start_daemon()
    result = await run_agentctl("run", "--json", "hello", env=env, cwd=project)
    assert result.returncode == 1, result.stderr
    assert f"cannot connect to provider 'loop' at http://127.0.0.1:{port}/v1".encode() in result.stderr
    assert_nowhere([URL_PASSWORD, "someone:"], {"stdout": result.stdout, "stderr": result.stderr})
    assert_nowhere([URL_PASSWORD, BASIC], everything_kept(env, daemon))


def test_the_secrets_of_a_provider_are_its_key_its_header_values_and_its_url_credentials() -> None:
    provider = ProviderConfig(
        "p",
        "openai",
        "https://me:p%40ss-word@host.example/v1",
        headers={"X-Api-Key": HEADER_SECRET, "X-Debug": "1"},
    )
    assert provider.url == "https://host.example/v1"
    assert provider.url_credentials == ("me", "p@ss-word")
    assert provider.secrets(KEY) == {
        KEY: "[API key]",
        HEADER_SECRET: "[header X-Api-Key]",  # and not "1": that short, it is no credential, and in every status code
        "p@ss-word": "[URL password]",
        "p%40ss-word": "[URL password]",
        "me:p%40ss-word": "[URL credentials]",
        base64.b64encode(b"me:p@ss-word").decode(): "[URL credentials]",
    }
    # A key written as the URL's user is one.
    assert ProviderConfig("p", "openai", "https://sk-in-the-url@host.example").secrets(None) == {
        "sk-in-the-url": "[URL credentials]",
        base64.b64encode(b"sk-in-the-url:").decode(): "[URL credentials]",
    }


async def test_the_log_holds_neither_prompts_nor_answers_at_the_default_level(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    prompt_marker, answer_marker = "PROMPT-MARKER-31a7", "ANSWER-MARKER-c04e"
    answer = ANSWER.replace(b'"fine"', f'"{answer_marker}"'.encode())
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, server.url)
        daemon = start_daemon()
        server.script(Streamed([answer]), Reply(500, {"content-type": "text/plain"}, b"upstream trouble"))
        result = await run_agentctl("run", f"please {prompt_marker}", env=env, cwd=project)
        assert result.returncode == 0, result.stderr
        assert answer_marker.encode() in result.stdout
        # A failed run is logged: its error, not the conversation it failed in.
        failed = await run_agentctl("run", "-c", f"again {prompt_marker}", env=env, cwd=project)
        assert failed.returncode == 1, failed.stderr
        assert "upstream trouble" in daemon.log()
        assert_nowhere([prompt_marker, answer_marker], {"log": daemon.log().encode()})
        nursery.cancel_scope.cancel()


async def test_a_tool_never_shows_a_providers_key_not_even_read_from_the_daemons_environment(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    # A model that runs `env` must not find the key there; one that reads the
    # daemon's own /proc/PID/environ finds it, and the result must not carry it.
    other_key = "sk-ant-environment-offered-3e9a"
    env["ANTHROPIC_API_KEY"] = other_key
    configure(env, "http://127.0.0.1:9/v1")
    env["AGENTD_SECRETS_KEEP"] = "kept-for-tools"
    daemon = start_daemon()
    command = "env; echo ---; tr '\\0' '\\n' < /proc/$PPID/environ"
    script = {"steps": [{"tool_calls": [{"name": "bash", "arguments": {"command": command}}]}]}
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        reply = await ws.send(session_id, script, allow=["*"])
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["error"] is None
        messages = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    [result] = [part for m in messages for part in m["parts"] if part["type"] == "tool_result"]
    shell_env, _, daemon_env = result["output"].partition("---")
    # The rest of the environment is the tools' to use; only the key variables are gone.
    assert "AGENTD_SECRETS_KEEP=kept-for-tools" in shell_env
    assert KEY_ENV not in shell_env and "ANTHROPIC_API_KEY" not in shell_env
    # Where the key could still be read, it is redacted, by name.
    assert f"{KEY_ENV}=[API key]" in daemon_env
    assert "ANTHROPIC_API_KEY=[ANTHROPIC_API_KEY]" in daemon_env
    assert_nowhere([KEY, other_key], everything_kept(env, daemon))
