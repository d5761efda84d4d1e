"""A workspace's permission requests: who may run what, the requests waiting for an answer, and their ends.

One `Permissions` per workspace. `authorize` decides a tool call at once when
it can (a read, a rule, a grant for the session) and otherwise asks every
subscriber of the workspace, with a must-deliver `permission.request`, then
waits, in the run's own task, for the first of: an answer (`grant`), the
timeout, the run's cancellation. The wait is a cancel scope of that task, not
a task of its own: a request blocks only its own run, and nothing outlives
the run that asked. Whatever ends it, `permission.resolved` goes out once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, get_args

import attrs
import trio

from agentd.errors import InvalidRequest, NotFound
from agentd.protocol import PermissionOutcome, PermissionRequest, PermissionResolved, events, unstructure
from agentd.pubsub import Broker, Event
from agentd.shutdown import Shutdown

from ._rules import allows, parse_rules
from ._settings import PermissionSettings

__all__ = ["ACTIONS", "PermissionAsk", "Permissions"]

log = logging.getLogger(__name__)

# What an answer may say: the four options an editor shows.
ACTIONS: Final = ("allow", "allow_session", "deny", "deny_session")
ALLOWED: Final = frozenset({"allow", "allow_session"})
# How many resolved request ids are remembered, so that a late answer hears
# `resolved: false` rather than "no such request".
_REMEMBERED = 1024
# Room on top of the must-deliver wait for publishing a resolution after a cancel.
_PUBLISH_MARGIN = 1.0

assert set(ACTIONS) < set(get_args(PermissionOutcome))


@attrs.frozen
class PermissionAsk:
    """One tool call that may need a person's yes, as the agent loop describes it."""

    session_id: str
    run_id: str
    call_id: str
    # The tool's name, e.g. "bash".
    tool: str
    # "read" | "edit" | "execute" (agentd.tools ToolKind): reads are never asked about.
    kind: str
    # What prefix rules match: bash's command; None for tools without one.
    subject: str | None
    # What the call would do, in a line ("bash: git status").
    description: str
    # The decoded arguments.
    params: dict[str, Any]
    # The run's own allow rules (`agent.send`'s `allow`; "*" allows everything).
    run_rules: tuple[str, ...] = ()
    # The configuration allows this tool where it defines it (an MCP server's `allow`).
    preallowed: bool = False


@attrs.define(eq=False)
class _Pending:
    request: PermissionRequest
    # The seq `permission.request` went out as: a subscriber whose replay has it needs no copy.
    seq: int
    answered: trio.Event = attrs.field(factory=trio.Event)
    outcome: PermissionOutcome | None = None
    by: str = ""

    def resolve(self, outcome: PermissionOutcome, by: str) -> bool:
        """End the request as `outcome`; False if something ended it first."""
        if self.outcome is not None:
            return False
        self.outcome = outcome
        self.by = by
        self.answered.set()
        return True


class Permissions:
    def __init__(
        self,
        broker: Broker,
        shutdown: Shutdown,
        settings: Callable[[], PermissionSettings],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker = broker
        self._shutdown = shutdown
        # Read at each decision: the configuration file may change while the daemon runs.
        self._settings = settings
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        # (session_id, tool) -> "allow_session" | "deny_session", for the workspace's life.
        self._session_grants: dict[tuple[str, str], PermissionOutcome] = {}
        self._resolved: OrderedDict[str, None] = OrderedDict()
        self._closed = False

    # --- the agent loop's side

    def decide(self, ask: PermissionAsk) -> PermissionOutcome | None:
        """The outcome without asking anyone, or None when someone must be asked.

        A session's `deny_session` wins over every allow rule (a person said no
        for this session); then reads, the configuration's rules, the session's
        `allow_session`, the tool's own configuration (an MCP server's `allow`)
        and the run's own rules allow.
        """
        grant = self._session_grants.get((ask.session_id, ask.tool))
        if grant == "deny_session":
            return "deny_session"
        if ask.kind == "read":
            return "allow"
        if grant == "allow_session":
            return "allow_session"
        if ask.preallowed:
            return "allow"
        if allows(parse_rules(self._settings().allow), ask.tool, ask.subject):
            return "allow"
        if ask.run_rules and allows(parse_rules(ask.run_rules), ask.tool, ask.subject):
            return "allow"
        return None

    async def authorize(self, ask: PermissionAsk) -> PermissionOutcome:
        """May this call run? "allow"/"allow_session" yes; "deny"/"deny_session"/"timeout"/"cancelled" no.

        Cancelled while it waits (the run's cancel scope), the request resolves
        as "cancelled", its `permission.resolved` is published (shielded,
        bounded), and Cancelled goes on up.
        """
        decided = self.decide(ask)
        if decided is not None:
            return decided
        if self._closed:
            return "cancelled"
        timeout = self._settings().timeout
        request = PermissionRequest(
            request_id=f"perm_{uuid.uuid4().hex}",
            session_id=ask.session_id,
            run_id=ask.run_id,
            call_id=ask.call_id,
            tool=ask.tool,
            description=ask.description,
            params=ask.params,
            expires_at=self._clock() + timeout,
        )
        # No checkpoint from here to the publish, which numbers the event first thing.
        pending = _Pending(request, seq=self._broker.seq + 1)
        self._pending[request.request_id] = pending
        try:
            await self._broker.publish_must_deliver(events.PERMISSION_REQUEST, unstructure(request))
            with trio.move_on_after(timeout):
                await pending.answered.wait()
            pending.resolve("timeout", "timeout")
        except BaseException:
            pending.resolve("cancelled", "run")
            raise
        finally:
            await self._publish_resolved(pending)
        assert pending.outcome is not None
        return pending.outcome

    async def _publish_resolved(self, pending: _Pending) -> None:
        request = pending.request
        del self._pending[request.request_id]
        self._remember(request.request_id)
        assert pending.outcome is not None
        resolved = PermissionResolved(
            request.request_id, request.session_id, request.run_id, pending.outcome, pending.by
        )
        # Shielded: a cancelled run must still tell every client its question is over.
        with self._shutdown.shielded(self._broker.must_deliver_timeout + _PUBLISH_MARGIN) as scope:
            await self._broker.publish_must_deliver(events.PERMISSION_RESOLVED, unstructure(resolved))
        if scope.cancelled_caught:
            log.error("permission request %s: publishing its resolution took too long", request.request_id)

    def cancel_run(self, run_id: str) -> None:
        """Resolve the run's pending requests as "cancelled" (its waiting tasks publish that)."""
        for pending in list(self._pending.values()):
            if pending.request.run_id == run_id:
                pending.resolve("cancelled", "run")

    def close(self) -> None:
        """The workspace closes: every pending request resolves as "cancelled", and no new one is asked."""
        self._closed = True
        for pending in list(self._pending.values()):
            pending.resolve("cancelled", "run")

    # --- the clients' side

    def grant(self, request_id: str, action: str, by: str) -> bool:
        """Answer a request: True if this answer ended it, False if it had ended already.

        NotFound for a request id this workspace never asked (or resolved too long ago to remember).
        """
        if action not in ACTIONS:
            raise InvalidRequest(f"action: must be one of {', '.join(ACTIONS)}, not {action!r}")
        pending = self._pending.get(request_id)
        if pending is None:
            if request_id in self._resolved:
                return False
            raise NotFound(f"request_id: no permission request {request_id!r} in this workspace")
        outcome: PermissionOutcome = action  # type: ignore[assignment]  # checked against ACTIONS above
        if not pending.resolve(outcome, by):
            return False
        if action in ("allow_session", "deny_session"):
            self._session_grants[(pending.request.session_id, pending.request.tool)] = outcome
        return True

    def pending(self) -> list[PermissionRequest]:
        """The requests waiting for an answer, oldest first."""
        return [p.request for p in self._pending.values() if p.outcome is None]

    def pending_events(self, through: int) -> list[Event]:
        """`permission.request` events for the requests pending now that went out at or before seq `through`.

        What a new subscriber is given after its replay: those after `through`
        it receives live.
        """
        workspace_id = self._broker.workspace_id
        return [
            Event(workspace_id, p.seq, events.PERMISSION_REQUEST, unstructure(p.request), must_deliver=True)
            for p in self._pending.values()
            if p.outcome is None and p.seq <= through
        ]

    def _remember(self, request_id: str) -> None:
        self._resolved[request_id] = None
        while len(self._resolved) > _REMEMBERED:
            self._resolved.popitem(last=False)
