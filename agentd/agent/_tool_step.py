"""One model turn's tool calls: checked, allowed, run, and reported, each ending in a result for the model.

Whatever happens to a call — an unknown tool, arguments that are not what
the tool takes, a denial, a timeout, a tool that fails — ends as a result the
model reads, never as the run's end. Only a cancel of the run ends the step
early, and then the calls it cut short are recorded as cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import trio

from agentd.models import ToolCall
from agentd.permissions import PermissionAsk, Permissions
from agentd.protocol import ToolFinished, ToolResultPart, ToolStarted, ToolStatus, converter, events, unstructure
from agentd.pubsub import Broker
from agentd.redact import redact
from agentd.runs import Run
from agentd.tools import TOOLS, ToolContext, ToolError, ToolSpec, parse_arguments, run_tool

__all__ = ["ToolStep"]

log = logging.getLogger(__name__)

_SUMMARY_CHARS = 120

# What the model is told when a call was not made, by how its permission ended.
_NOT_ALLOWED: dict[str, tuple[ToolStatus, str]] = {
    "deny": ("denied", "The user denied this call; it was not made. Choose another way, or ask the user."),
    "deny_session": (
        "denied",
        "The user denied this tool for the rest of the session; the call was not made. Do not call it again.",
    ),
    "timeout": ("timeout", "Nobody answered the permission request in time; the call was not made."),
    "cancelled": ("cancelled", "The run was cancelled before the call was allowed; it was not made."),
}


def _line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= _SUMMARY_CHARS else first[: _SUMMARY_CHARS - 3] + "..."


class ToolStep:
    def __init__(
        self,
        run: Run,
        broker: Broker,
        permissions: Permissions,
        context: ToolContext,
        tools: Mapping[str, ToolSpec] = TOOLS,
    ) -> None:
        self._run = run
        # The tools the model was offered this turn: the built-ins, and the MCP servers' that were ready.
        self._tools = tools
        self._broker = broker
        self._permissions = permissions
        self._context = context
        self._results: dict[str, ToolResultPart] = {}
        # Every call's result, in the calls' order, once `run` returned or raised.
        self.results: list[ToolResultPart] = []

    async def run(self, calls: Sequence[ToolCall]) -> None:
        """Run the calls: then `results` holds every call's result, also when the run was cancelled meanwhile.

        Calls of tools that only read run concurrently; a call that changes
        something waits for the calls before it and runs alone, so a view
        after an edit in the same turn sees the edit.
        """
        results = self._results
        started: dict[str, ToolCall] = {}
        try:
            batch: list[ToolCall] = []
            for call in calls:
                spec = self._tools.get(call.name)
                if spec is None or spec.kind == "read":
                    batch.append(call)
                    continue
                await self._concurrently(batch, results, started)
                batch = []
                await self._one(call, results, started)
            await self._concurrently(batch, results, started)
        finally:
            for call in calls:
                if call.id not in results:
                    results[call.id] = self._finished(
                        call,
                        "cancelled",
                        "The run was cancelled; the call was cut short.",
                        "cancelled",
                        was_started=call.id in started,
                    )
            self.results = [results[call.id] for call in calls]

    async def _concurrently(
        self, batch: list[ToolCall], results: dict[str, ToolResultPart], started: dict[str, ToolCall]
    ) -> None:
        if len(batch) == 1:
            await self._one(batch[0], results, started)
        elif batch:
            async with trio.open_nursery() as nursery:
                for call in batch:
                    nursery.start_soon(self._one, call, results, started)

    async def _one(self, call: ToolCall, results: dict[str, ToolResultPart], started: dict[str, ToolCall]) -> None:
        run = self._run
        spec = self._tools.get(call.name)
        started[call.id] = call
        try:
            if spec is None:
                known = ", ".join(sorted(self._tools))
                raise ToolError(f"unknown tool {call.name!r}; the tools are: {known}")
            params = parse_arguments(spec, call.arguments)
            description = spec.describe(params)
        except ToolError as exc:
            self._started(call, call.name)
            results[call.id] = self._finished(call, "error", str(exc), _line(str(exc)))
            return
        self._started(call, description)
        outcome = await self._permissions.authorize(
            PermissionAsk(
                session_id=run.session_id,
                run_id=run.id,
                call_id=call.id,
                tool=spec.name,
                kind=spec.kind,
                subject=spec.subject(params),
                description=description,
                # As the tool took them (defaults filled in), not as the model spelled them.
                params=converter.unstructure(params),
                run_rules=run.allow,
                preallowed=spec.preallowed,
            )
        )
        if outcome not in ("allow", "allow_session"):
            status, output = _NOT_ALLOWED[outcome]
            results[call.id] = self._finished(call, status, output, f"{status}: {description}")
            return
        results[call.id] = await self._execute(spec, call, params)

    async def _execute(self, spec: ToolSpec, call: ToolCall, params: object) -> ToolResultPart:
        # Every result goes to the store, the events and the provider: the one place a key is taken out.
        secrets = self._context.secrets
        try:
            out = await run_tool(spec, self._context, params)
        except ToolError as exc:
            message = redact(str(exc), secrets)
            return self._finished(call, "error", message, _line(message))
        return self._finished(call, "ok", redact(out.output, secrets), _line(redact(out.summary, secrets)))

    def _started(self, call: ToolCall, description: str) -> None:
        run = self._run
        self._broker.publish(
            events.TOOL_STARTED, unstructure(ToolStarted(run.session_id, run.id, call.id, call.name, description))
        )

    def _finished(
        self, call: ToolCall, status: ToolStatus, output: str, summary: str, *, was_started: bool = True
    ) -> ToolResultPart:
        run = self._run
        if was_started:
            self._broker.publish(
                events.TOOL_FINISHED,
                unstructure(ToolFinished(run.session_id, run.id, call.id, call.name, status, summary)),
            )
        return ToolResultPart(call_id=call.id, name=call.name, status=status, output=output, summary=summary)
