"""The wire: what a client may send through a real socket, and what each bad input costs.

A message the daemon cannot read as MessagePack-RPC ends that connection and
nothing else; a request it can read is always answered, with an error when its
method or params are wrong. Every connection-closing case keeps a bystander
client connected and shows it, and the daemon, still serving afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, Events, RawConnection, Workspace, open_raw

import agentd
from agentctl.client import Client, RpcError
from agentd.rpc import Response

HANG = {"chunks": ["started"], "hang": True}


# --- helpers -------------------------------------------------------------------


async def expect_closed(raw: RawConnection) -> None:
    """The daemon closes `raw` without answering anything first."""
    try:
        message = await raw.receive()
    except trio.BrokenResourceError:
        return  # closed with our bytes unread: a reset, which is a close too
    assert message is None, f"expected the daemon to close the connection, got {message!r}"


@asynccontextmanager
async def bystander(daemon: Daemon) -> AsyncIterator[Client]:
    """A client-library connection open across a bad input; checked alive on the way out."""
    async with daemon.client() as client:
        assert await client.call("ping") == {}
        yield client
        assert await client.call("ping") == {}
        assert client.connected
    assert daemon.proc.poll() is None, "the daemon died:\n" + daemon.log()


def result_of(response: Response) -> dict[str, Any]:
    assert response.error is None, response
    assert isinstance(response.result, dict), response
    return response.result


def error_of(response: Response) -> tuple[int, str]:
    assert response.result is None, response
    assert isinstance(response.error, list) and len(response.error) == 2, response
    code, message = response.error
    assert type(code) is int and type(message) is str, response
    return code, message


async def expect_usable(raw: RawConnection) -> None:
    response = await raw.call("ping")
    assert response.error is None and response.result == {}


def initialize_of_size(msgid: int, size: int) -> bytes:
    """An `initialize` request exactly `size` bytes long (for 300 < size < 65000)."""
    padding = 1000
    overhead = len(msgpack.packb([0, msgid, "initialize", [{"client_name": "x" * padding}]])) - padding
    data: bytes = msgpack.packb([0, msgid, "initialize", [{"client_name": "x" * (size - overhead)}]])
    assert len(data) == size
    return data


async def hanging_run(ws: Workspace) -> tuple[str, str]:
    """A session with a scripted run that streams one chunk and then never ends; (session_id, run_id)."""
    session_id = await ws.new_session()
    run_id = (await ws.send(session_id, HANG))["run_id"]
    await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["run_id"] == run_id)
    return session_id, run_id


# --- what closes a connection ------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xc1", id="malformed-msgpack"),
        pytest.param(msgpack.packb({"method": "ping"}), id="map"),
        pytest.param(msgpack.packb(7), id="int"),
        pytest.param(msgpack.packb([7, 1]), id="unknown-message-type"),
        pytest.param(msgpack.packb([]), id="empty-array"),
        pytest.param(msgpack.packb([0, -1, "ping", []]), id="negative-msgid"),
        pytest.param(msgpack.packb([0, 1, "ping"]), id="request-of-three"),
    ],
)
async def test_unreadable_message_closes_only_that_connection(daemon: Daemon, data: bytes) -> None:
    async with bystander(daemon):
        raw = await open_raw(daemon)
        await expect_usable(raw)
        await raw.send_bytes(data)
        await expect_closed(raw)


async def test_message_over_max_message_size_closes_only_that_connection(
    start_daemon: DaemonFactory,
) -> None:
    daemon = start_daemon("--max-message-size", "4096")
    async with bystander(daemon):
        raw = await open_raw(daemon)
        await expect_usable(raw)
        await raw.send_bytes(initialize_of_size(99, 5000))
        await expect_closed(raw)


@pytest.mark.parametrize("size", [4000, 4096])
async def test_message_within_max_message_size_is_answered(start_daemon: DaemonFactory, size: int) -> None:
    daemon = start_daemon("--max-message-size", "4096")
    raw = await open_raw(daemon)
    await raw.send_bytes(initialize_of_size(7, size))
    assert result_of(await raw.response(7))["server"] == "agentd"
    await expect_usable(raw)


async def test_messages_each_within_max_message_size_sent_in_one_write_are_all_answered(
    start_daemon: DaemonFactory,
) -> None:
    # The limit is on one message; two 3000-byte requests in one write are not one 6000-byte message.
    daemon = start_daemon("--max-message-size", "4096")
    raw = await open_raw(daemon)
    await raw.send_bytes(initialize_of_size(1, 3000) + initialize_of_size(2, 3000))
    for msgid in (1, 2):
        response = await raw.response(msgid)
        assert response.error is None, response
    await expect_usable(raw)


# --- what is answered with an error, on a connection that stays usable -------------


async def test_unknown_method_gets_error_5_and_connection_stays_usable(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    code, message = error_of(await raw.call("no.such.method", {}))
    assert code == 5 and "no.such.method" in message
    await expect_usable(raw)


@pytest.mark.parametrize("method", [42, None, b"ping", ["ping"]])
async def test_method_that_is_not_a_string_gets_error_5(daemon: Daemon, method: object) -> None:
    raw = await open_raw(daemon)
    msgid = await raw.request(method, [])
    code, _ = error_of(await raw.response(msgid))
    assert code == 5
    await expect_usable(raw)


@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        pytest.param("ping", {"x": 1}, "params", id="params-not-an-array"),
        pytest.param("ping", "x", "params", id="params-a-string"),
        pytest.param("ping", [{}, {}], "params", id="params-of-two"),
        pytest.param("ping", [1], "params[0]", id="params0-not-a-map"),
        pytest.param("workspace.open", [[]], "params[0]", id="params0-an-array"),
        pytest.param("workspace.open", [{}], "params.path", id="missing-field"),
        pytest.param("workspace.open", [{"path": None}], "params.path", id="nil-for-a-string"),
        pytest.param("workspace.open", [{"path": 5}], "params.path", id="int-for-a-string"),
        pytest.param("run.wait", [{"run_id": "r", "timeout": "1"}], "params.timeout", id="string-for-a-number"),
        pytest.param("run.wait", [{"run_id": "r", "timeout": float("nan")}], "params.timeout", id="nan-for-a-number"),
        pytest.param("server.shutdown", [{"if_idle": 1}], "params.if_idle", id="int-for-a-boolean"),
        pytest.param("workspace.open", [{"path": "/", "colour": "red"}], "colour", id="unknown-extra-field"),
        pytest.param("ping", [{"colour": "red"}], "colour", id="extra-field-for-no-params"),
    ],
)
async def test_bad_params_get_error_1_naming_the_field(daemon: Daemon, method: str, params: object, named: str) -> None:
    raw = await open_raw(daemon)
    msgid = await raw.request(method, params)
    code, message = error_of(await raw.response(msgid))
    assert code == 1
    assert named in message
    await expect_usable(raw)


async def test_client_notification_is_ignored(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    await raw.send_bytes(msgpack.packb([2, "ping", []]) + msgpack.packb([2, "server.shutdown", []]))
    msgid = await raw.request("ping", [])
    # Nothing answers the notifications: the very next message is the ping's reply.
    first = await raw.receive()
    assert isinstance(first, Response) and first.msgid == msgid and first.result == {}
    assert daemon.proc.poll() is None


async def test_client_response_is_ignored(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    await raw.send_bytes(msgpack.packb([1, 1, None, {"ok": True}]) + msgpack.packb([1, 77, [0, "x"], None]))
    msgid = await raw.request("ping", [])
    first = await raw.receive()
    assert isinstance(first, Response) and first.msgid == msgid and first.result == {}


async def test_pipelined_requests_in_one_write_are_all_answered_with_their_msgids(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    methods = ["ping", "server.status", "initialize", "no.such.method"]
    wanted = {msgid: methods[msgid % 4] for msgid in range(1, 65)}
    await raw.send_bytes(b"".join(msgpack.packb([0, msgid, m, []]) for msgid, m in wanted.items()))
    answered: dict[int, Response] = {}
    while len(answered) < len(wanted):
        message = await raw.receive()
        assert isinstance(message, Response), message
        assert message.msgid in wanted and message.msgid not in answered, message
        answered[message.msgid] = message
    for msgid, method in wanted.items():
        response = answered[msgid]
        if method == "no.such.method":
            assert error_of(response)[0] == 5
        else:
            result = result_of(response)
            if method == "server.status":
                assert result["pid"] == daemon.proc.pid
            if method == "initialize":
                assert result["server"] == "agentd"


# --- ordering and run.wait ------------------------------------------------------------


async def test_replies_go_out_of_order_a_ping_overtakes_a_blocked_run_wait(daemon: Daemon, ws: Workspace) -> None:
    session_id, run_id = await hanging_run(ws)
    raw = await open_raw(daemon)
    wait_id = await raw.request("run.wait", [{"run_id": run_id}])
    ping_id = await raw.request("ping", [])
    first = await raw.receive()
    assert isinstance(first, Response) and first.msgid == ping_id and first.result == {}
    await ws.cancel(session_id)
    second = await raw.receive()
    assert isinstance(second, Response) and second.msgid == wait_id, second
    rc = result_of(second)
    assert rc["run_id"] == run_id and rc["cancelled"] is True


async def test_run_wait_with_timeout_on_unfinished_run_gets_error_6(ws: Workspace) -> None:
    _, run_id = await hanging_run(ws)
    with pytest.raises(RpcError) as info:
        await ws.client.call("run.wait", {"run_id": run_id, "timeout": 0.1})
    assert info.value.code == 6
    assert run_id in info.value.message


async def test_run_wait_on_unknown_run_id_gets_error_2(daemon: Daemon) -> None:
    async with daemon.client() as client:
        for params in ({"run_id": "no-such-run"}, {"run_id": "no-such-run", "timeout": 0.1}):
            with pytest.raises(RpcError) as info:
                await client.call("run.wait", params)
            assert info.value.code == 2 and "run_id" in info.value.message


async def test_run_wait_with_negative_timeout_gets_error_1(daemon: Daemon) -> None:
    async with daemon.client() as client:
        with pytest.raises(RpcError) as info:
            await client.call("run.wait", {"run_id": "r", "timeout": -1})
        assert info.value.code == 1 and "timeout" in info.value.message


async def test_run_wait_on_finished_run_returns_its_run_complete(ws: Workspace) -> None:
    session_id = await ws.new_session()
    run_id = (await ws.send(session_id, "all done"))["run_id"]
    published = await ws.events.until_complete(run_id)
    assert await ws.client.call("run.wait", {"run_id": run_id}) == published
    assert await ws.client.call("run.wait", {"run_id": run_id, "timeout": 0}) == published


# --- hello and status ------------------------------------------------------------------


async def test_initialize_names_server_protocol_and_pid(daemon: Daemon) -> None:
    async with daemon.client() as client:
        hello = await client.call("initialize", {"client_name": "tests", "client_version": "0"})
    assert hello["server"] == "agentd"
    assert hello["protocol"] == 1
    assert hello["pid"] == daemon.proc.pid
    assert hello["version"] == agentd.__version__
    # The tests' environment configures no model: runs answer with echo, and clients can say so.
    assert hello["default_model"] == "echo" and hello["default_model_is_fallback"] is True
    assert hello["max_message_size"] == 16 * 1024 * 1024


async def test_server_status_fields_and_types(daemon: Daemon, ws: Workspace) -> None:
    status: dict[str, Any] = await ws.client.call("server.status")
    types = {
        "version": str,
        "pid": int,
        "uptime_s": float,
        "workspaces": int,
        "clients": int,
        "subscriptions": int,
        "active_runs": int,
        "events_dropped": int,
        "tasks": int,
        "socket_activated": bool,
    }
    # Not socket-activated, so it never exits on its own (tests/test_systemd.py has the other case).
    assert status.pop("idle_exit_s") is None
    # No MCP server anywhere: no state has a count (tests/test_mcp.py has servers).
    assert status.pop("mcp_servers") == {}
    assert set(status) == set(types)
    for field, kind in types.items():
        assert type(status[field]) is kind, (field, status[field])
    assert status["pid"] == daemon.proc.pid
    assert status["uptime_s"] >= 0
    assert status["workspaces"] == 1 and status["clients"] == 1 and status["subscriptions"] == 1
    assert status["active_runs"] == 0 and status["events_dropped"] == 0
    # The root, trio's own, the daemon's long-lived tasks, this connection, the workspace and its subscription writer.
    assert status["tasks"] > 5
    idle = status

    async with daemon.client() as other:
        session_id, _ = await hanging_run(ws)
        status = await other.call("server.status")
        assert status["clients"] == 2 and status["active_runs"] == 1
        # The other connection and the hanging run are tasks of their own.
        assert status["tasks"] >= idle["tasks"] + 2
        await ws.cancel(session_id)
        await ws.events.until(lambda e: e["type"] == "run.complete")
    # Both over, the count is back where it was (the connection's task ends a moment after it closes).
    with trio.fail_after(WAIT):
        while (await ws.client.call("server.status"))["tasks"] != idle["tasks"]:
            await trio.sleep(0.02)


# --- one client's trouble is its own ------------------------------------------------------


async def test_client_disconnecting_mid_request_does_not_disturb_another(daemon: Daemon, ws: Workspace) -> None:
    session_id, run_id = await hanging_run(ws)
    async with bystander(daemon) as other, trio.open_nursery() as nursery:
        waited: list[Any] = []

        async def wait_for_run() -> None:
            waited.append(await other.call("run.wait", {"run_id": run_id}))

        nursery.start_soon(wait_for_run)

        # One client hangs up with a reply owed to it, another halfway through a request.
        owed = await open_raw(daemon)
        await owed.request("run.wait", [{"run_id": run_id}])
        await expect_usable(owed)  # so the run.wait is surely being served
        await owed.stream.aclose()
        partial = await open_raw(daemon)
        request = msgpack.packb([0, 1, "workspace.open", [{"path": "/" + "x" * 200}]])
        await partial.send_bytes(request[: len(request) // 2])
        await partial.stream.aclose()

        await ws.cancel(session_id)
        rc = await ws.events.until_complete(run_id)
        assert rc["cancelled"] is True
    assert waited == [rc]


# --- the socket file --------------------------------------------------------------------------


async def test_socket_is_0600_in_a_0700_directory_the_daemon_creates(
    start_daemon: DaemonFactory, short_tmp: Path
) -> None:
    path = short_tmp / "fresh" / "agentd.sock"
    daemon = start_daemon(socket_path=path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    async with daemon.client() as client:
        assert await client.call("ping") == {}


async def test_managed_socket_directory_with_loose_mode_is_tightened_to_0700(
    start_daemon: DaemonFactory, env: dict[str, str]
) -> None:
    directory = Path(env["XDG_RUNTIME_DIR"]) / "agentd"
    directory.mkdir(parents=True)
    os.chmod(directory, 0o755)
    start_daemon(socket_path=directory / "agentd.sock")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(directory / "agentd.sock").st_mode) == 0o600


async def test_second_daemon_on_same_socket_exits_nonzero_and_first_keeps_serving(
    daemon: Daemon, env: dict[str, str]
) -> None:
    inode = os.stat(daemon.socket_path).st_ino
    with trio.fail_after(WAIT):
        second = await trio.run_process(
            [sys.executable, "-m", "agentd", "--socket", str(daemon.socket_path)],
            env=env,
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert second.returncode != 0
    assert f"another agentd (pid {daemon.proc.pid}) is already running".encode() in second.stderr, second.stderr
    assert os.stat(daemon.socket_path).st_ino == inode, "the second daemon replaced the socket"
    async with daemon.client() as client:
        assert (await client.call("initialize"))["pid"] == daemon.proc.pid


async def test_stale_socket_file_is_replaced_by_a_new_daemon(start_daemon: DaemonFactory, env: dict[str, str]) -> None:
    path = Path(env["AGENTD_SOCKET"])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    daemon = start_daemon()
    async with daemon.client() as client:
        assert (await client.call("initialize"))["pid"] == daemon.proc.pid


async def test_socket_left_by_a_killed_daemon_is_replaced_by_a_new_daemon(
    start_daemon: DaemonFactory,
) -> None:
    first = start_daemon()
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=WAIT)
    assert stat.S_ISSOCK(os.lstat(first.socket_path).st_mode), "expected the killed daemon's socket left behind"
    second = start_daemon()
    async with second.client() as client:
        assert (await client.call("initialize"))["pid"] == second.proc.pid
        ws = await client.call("workspace.open", {"path": str(first.socket_path.parent)})
        assert ws["path"] == os.path.realpath(first.socket_path.parent)


async def test_half_closed_client_still_gets_its_replies(ws: Workspace, daemon: Daemon) -> None:
    # A script that writes its requests and shuts its side (`nc -N`) still reads.
    session_id = await ws.new_session()
    reply = await ws.send(session_id, {"chunks": ["done"], "delay_ms": 100})
    raw = await open_raw(daemon)
    ping = await raw.request("ping")
    wait = await raw.request("run.wait", [{"run_id": reply["run_id"]}])
    await raw.stream.send_eof()
    assert (await raw.response(ping)).result == {}
    waited = await raw.response(wait)
    assert waited.error is None and waited.result["text"] == "done"
    assert await raw.closed_by_peer()


async def test_a_client_gone_with_a_run_wait_owed_lets_go_of_its_workspace(
    start_daemon: DaemonFactory, project: Path
) -> None:
    # Unlike a half-close, a closed socket reads nothing more: waiting to answer
    # its run.wait would hold its claim, and so its workspace and hanging run, forever.
    daemon = start_daemon("--idle-grace", "0.3")
    async with daemon.client() as watcher:
        gone = await open_raw(daemon)
        workspace_id = (await gone.call("workspace.open", {"path": str(project)})).result["id"]
        sub = await watcher.call("events.subscribe", {"workspace_id": workspace_id})  # no claim
        events = Events(watcher, sub["subscription_id"])
        session_id = (await gone.call("session.create", {"workspace_id": workspace_id})).result["id"]
        # A run holds its workspace open until it ends: one that ends by itself, soon.
        script = {"chunks": ["a", "b", "c"], "delay_ms": 200}
        params = {"workspace_id": workspace_id, "session_id": session_id, "prompt": json.dumps(script)}
        run_id = (await gone.call("agent.send", {**params, "model": "scripted"})).result["run_id"]
        await events.until(lambda e: e["type"] == "message.delta")
        await gone.request("run.wait", [{"run_id": run_id}])
        await expect_usable(gone)  # so the run.wait is surely being served
        await gone.stream.aclose()

        rc = await events.until_complete(run_id)
        assert rc["cancelled"] is False
        closed = await events.until(lambda e: e["type"] == "workspace.closed")
        assert closed["payload"] == {"workspace_id": workspace_id, "reason": "idle", "error": None}
        assert (await watcher.call("server.status"))["clients"] == 1


async def test_subscriptions_of_a_closed_connection_are_forgotten(daemon: Daemon, project: Path) -> None:
    gone = await open_raw(daemon)
    opened = await gone.call("workspace.open", {"path": str(project)})
    assert (await gone.call("events.subscribe", {"workspace_id": opened.result["id"]})).error is None
    async with daemon.client() as client:
        await client.call("workspace.open", {"path": str(project)})
        assert (await client.call("server.status"))["subscriptions"] == 1
        await gone.stream.aclose()
        # Left behind, it would fill with events nobody reads and hold up every
        # must-deliver event for the full timeout.
        with trio.fail_after(WAIT):
            while (await client.call("server.status"))["subscriptions"] != 0:
                await trio.sleep(0.02)


async def test_unsubscribe_ends_the_subscription_once(ws: Workspace) -> None:
    sid = ws.events.subscription_id
    assert await ws.client.call("events.unsubscribe", {"subscription_id": sid}) == {}
    with pytest.raises(RpcError) as again:
        await ws.client.call("events.unsubscribe", {"subscription_id": sid})
    assert again.value.code == 2


async def test_ping_answers_alike_with_no_params_and_an_empty_map(daemon: Daemon) -> None:
    # `[]` is answered by the connection from a reply packed once; `[{}]` goes through the method table.
    raw = await open_raw(daemon)
    sent = [await raw.request("ping", []), await raw.request("ping", [{}]), await raw.request("ping", [])]
    got = [await raw.receive() for _ in sent]
    assert all(isinstance(r, Response) for r in got)
    assert sorted((r.msgid, r.error, r.result) for r in got if isinstance(r, Response)) == sorted(
        (msgid, None, {}) for msgid in sent
    )


async def test_an_agent_cancel_written_just_before_the_connection_closes_still_cancels(
    daemon: Daemon, ws: Workspace
) -> None:
    session_id, run_id = await hanging_run(ws)
    for i in range(5):
        raw = await open_raw(daemon)
        # A run queued behind the hanging one; then its cancel, and the connection gone at once.
        again = f"again-{i}"
        send = {"workspace_id": ws.id, "session_id": session_id, "prompt": "x", "run_id": again}
        assert (await raw.call("agent.send", send)).error is None
        cancel = [0, 2, "agent.cancel", [{"workspace_id": ws.id, "session_id": session_id, "run_id": again}]]
        await raw.send_bytes(msgpack.packb(cancel))
        await raw.stream.aclose()
        done = await ws.client.call("run.wait", {"run_id": again, "timeout": WAIT})
        assert done["cancelled"] is True, done
    await ws.cancel(session_id)
    assert (await ws.events.until_complete(run_id))["cancelled"] is True
