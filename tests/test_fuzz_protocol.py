"""Protocol fuzzing on the real socket: junk values, every method with every field wrong, broken byte streams.

The daemon must never crash, never answer code 0, answer each bad field with
an error that names it, close only the connection whose bytes broke the wire,
answer ping throughout, and hold no more fds, memory or server.status counts
afterwards than before. The generators and the checks are
bench/_stress/_fuzz.py's, which the soak runs too; Hypothesis prints the
falsifying plan, the seeded driver its seed (AGENTD_STRESS_SEED to run it again).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from support import WAIT, Daemon, DaemonFactory, open_raw

from agentctl.client import open_client
from agentd.rpc import DEFAULT_MAX_MESSAGE_SIZE, MAX_VALUES, ErrorCode
from bench._stress import _fuzz
from bench._stress._fuzz import Case, Context, Plan, drive_fuzz, make_context, run_plan
from bench._stress._health import Health, health, settled_leaks

# Examples per Hypothesis test: together with the daemon's start, under a minute on two loaded cores.
EXAMPLES = int(os.environ.get("AGENTD_FUZZ_EXAMPLES", "200"))
# The seeded driver's budget.
BUDGET = float(os.environ.get("AGENTD_FUZZ_SECONDS", "6"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    # Both tests run one inner function: a database would replay one's examples in the other.
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def stress_seed() -> int:
    given_seed = os.environ.get("AGENTD_STRESS_SEED")
    return int(given_seed) if given_seed else random.SystemRandom().randrange(2**32)


def start(start_daemon: DaemonFactory) -> Daemon:
    # Workspaces close soon after their last client goes, so the leak check sees them go.
    return start_daemon("--idle-grace", "0.3")


async def _health(daemon: Daemon) -> Health:
    async with open_client(daemon.socket_path) as client:
        return await health(daemon.proc.pid, client)


async def _no_leaks(daemon: Daemon, before: Health) -> None:
    assert daemon.proc.poll() is None, "the daemon exited:\n" + daemon.log()[-4000:]
    found, _ = await settled_leaks(daemon.socket_path, daemon.proc.pid, before, WAIT)
    assert found == []
    assert "Traceback" not in daemon.log(), daemon.log()[-4000:]


class _Fuzzing:
    """A daemon, a workspace held open with real ids for requests to name, and a plan runner (one trio.run each)."""

    def __init__(self, daemon: Daemon, project: Path, tmp: Path) -> None:
        self.daemon = daemon
        self.project = project
        self.ctx = Context(tmp / "missing")

    async def setup(self) -> Health:
        before = await _health(self.daemon)
        async with open_client(self.daemon.socket_path) as client:
            self.ctx = await make_context(client, self.project, self.ctx.missing)
        return before

    def run(self, plan: Plan) -> None:
        trio.run(self._run, plan)

    async def _run(self, plan: Plan) -> None:
        # The workspace is claimed while the plan runs, so its ids are live ones.
        async with open_client(self.daemon.socket_path) as holder:
            await holder.call("workspace.open", {"path": str(self.project)})
            # Each reply is bounded within; this bounds all of the plan (its sends too).
            with trio.fail_after(4 * WAIT):
                problems, _ = await run_plan(self.daemon.socket_path, plan, self.ctx, reply_bound=WAIT)
            with trio.fail_after(WAIT):
                await holder.call("ping")
        assert problems == [], problems


def _fuzz_examples(daemon: Daemon, project: Path, tmp: Path, strategy: Any) -> None:
    fuzzing = _Fuzzing(daemon, project, tmp)
    before = trio.run(fuzzing.setup)

    @FUZZ_SETTINGS
    @given(strategy)
    def example(plan: Plan) -> None:
        fuzzing.run(plan)

    example()
    trio.run(_no_leaks, daemon, before)


# Sync tests: each Hypothesis example is a trio.run of its own, and the leak check comes after them all.


def test_fuzzed_connections_get_clear_errors_and_leave_nothing_behind(
    start_daemon: DaemonFactory, project: Path, short_tmp: Path
) -> None:
    _fuzz_examples(start(start_daemon), project, short_tmp, _fuzz.plans())


def test_every_method_with_fuzzed_fields_arriving_a_byte_at_a_time(
    start_daemon: DaemonFactory, project: Path, short_tmp: Path
) -> None:
    from hypothesis import strategies as st

    def one_byte_at_a_time(case: Case) -> Plan:
        # A byte per write up to 400 bytes (most requests), 400 pieces beyond.
        return Plan((Case(case.kind, case.value, case.broken, cuts=tuple(i / 400 for i in range(1, 400))),), "read")

    _fuzz_examples(start(start_daemon), project, short_tmp, st.builds(one_byte_at_a_time, _fuzz.requests()))


async def test_seeded_fuzzing_with_a_pinger_keeps_the_daemon_up_and_clean(
    start_daemon: DaemonFactory, project: Path
) -> None:
    seed = stress_seed()
    daemon = start(start_daemon)
    before = await _health(daemon)
    # The driver's own bound on a plan is four replies' bound: past its budget, one more plan, and its wind-down.
    with trio.fail_after(BUDGET + 5 * WAIT):
        stats = await drive_fuzz(
            daemon.socket_path, daemon.proc.pid, seed, trio.current_time() + BUDGET, project=project, reply_bound=WAIT
        )
    where = f"seed {seed}: AGENTD_STRESS_SEED={seed} pytest {__file__} -k seeded; counts {stats.counts}"
    print(where)
    assert stats.violations == [], "\n".join([where, *stats.violations])
    assert stats.counts["connections"] >= 20, where
    assert stats.counts["pings"] >= 10, where
    await _no_leaks(daemon, before)


# --- bugs the fuzzing found, each pinned --------------------------------------------------------------------


async def _error(daemon: Daemon, method: str, params: object) -> list[Any]:
    raw = await open_raw(daemon)
    await raw.send_bytes(msgpack.packb([0, 7, method, params]))
    reply = await raw.response(7)
    await raw.stream.aclose()
    assert isinstance(reply.error, list), reply
    return reply.error


async def test_a_server_spec_that_is_not_a_map_is_named(daemon: Daemon) -> None:
    ids = {"workspace_id": "ws_1", "session_id": "s_1"}
    code, message = await _error(daemon, "session.mcp_servers", [{**ids, "servers": ["x"]}])
    assert (code, message) == (ErrorCode.INVALID_PARAMS, "expected a map, got str @ params.servers[0]")


async def test_a_non_string_key_in_a_server_spec_is_invalid_params_not_an_internal_error(daemon: Daemon) -> None:
    ids = {"workspace_id": "ws_1", "session_id": "s_1"}
    code, message = await _error(daemon, "session.mcp_servers", [{**ids, "servers": [{1: "x"}]}])
    assert (code, message) == (ErrorCode.INVALID_PARAMS, "keys must be strings, got int 1 @ params.servers[0]")
    assert "Traceback" not in daemon.log()


SERVER_WITH_A_LIST_ENV = [{"workspace_id": "w", "session_id": "s", "servers": [{"name": "a", "env": [1]}]}]


@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        ("workspace.open", [{"path": 1}], "params.path"),
        ("agent.send", [{"workspace_id": "w", "session_id": "s", "prompt": b"x"}], "params.prompt"),
        ("agent.send", [{"workspace_id": "w", "session_id": "s", "prompt": "p", "allow": ["*", 2]}], "allow[1]"),
        ("run.wait", [{"run_id": "r", "timeout": "soon"}], "params.timeout"),
        ("events.subscribe", [{"workspace_id": "w", "since": 1.5}], "params.since"),
        ("session.mcp_servers", SERVER_WITH_A_LIST_ENV, "env"),
        ("server.shutdown", [{"if_idle": 1}], "params.if_idle"),
        ("ping", [{1: 2}], "keys must be strings"),
    ],
)
async def test_each_bad_field_gets_an_error_that_names_it(
    daemon: Daemon, method: str, params: object, named: str
) -> None:
    code, message = await _error(daemon, method, params)
    assert code == ErrorCode.INVALID_PARAMS
    assert named in message


async def test_a_huge_id_is_quoted_back_cut_short(daemon: Daemon) -> None:
    # A NotFound quotes the id the client sent: the client decides how long it is.
    code, message = await _error(daemon, "session.list", [{"workspace_id": "w" * 1_000_000}])
    assert code == ErrorCode.NOT_FOUND
    assert message.startswith("workspace_id: no open workspace 'www")
    assert message.endswith("www' (open it with workspace.open)"), "why it failed comes last, and stays"
    assert len(message) < 4100 and "characters left out" in message


async def test_messages_over_the_size_limit_leave_no_memory_behind(daemon: Daemon, short_tmp: Path) -> None:
    # Each held its 16 MiB twice over (in the codec's two unpackers, reached from the traceback of the
    # error it kept) until the cycle collector ran: RSS grew by 32 MiB per message.
    before = await _health(daemon)
    plan = Plan((Case("huge", size=DEFAULT_MAX_MESSAGE_SIZE + 1),), "read")
    for _ in range(8):
        with trio.fail_after(4 * WAIT):
            problems, counts = await run_plan(
                daemon.socket_path, plan, Context(short_tmp / "missing"), reply_bound=WAIT
            )
        assert problems == [] and counts["closed_by_daemon"] == 1
    found, after = await settled_leaks(daemon.socket_path, daemon.proc.pid, before, WAIT, rss_slack=48 << 20)
    assert found == [], (before.summary(), after.summary())


async def test_a_quarter_million_wrong_elements_are_refused_at_once(daemon: Daemon) -> None:
    # Each wrong element was an exception with notes, formatted into the message: 15 s on one core,
    # with the daemon's event loop held and every other client waiting.
    params = [{"workspace_id": "w", "session_id": "s", "prompt": "p", "allow": [0] * (MAX_VALUES - 16)}]
    raw = await open_raw(daemon)
    await raw.send_bytes(msgpack.packb([0, 7, "agent.send", params]))
    with trio.fail_after(3):
        reply = await raw.response(7)
    await raw.stream.aclose()
    code, message = reply.error
    assert code == ErrorCode.INVALID_PARAMS
    assert message.startswith("expected a string, got int @ params.allow[0]") and message.endswith("; and more")
