"""The coordinator and the session agent: what a run does once it is dispatched.

The coordinator prepares the run (resolves its model); whatever fails there
fails before the session agent ran, and the dispatcher's fallback reports it.
The session agent runs the agent loop — model, tool calls, results, model —
and publishes the run's messages and then its authoritative RunComplete,
whatever ends it: a finish, the step limit, an error, a cancel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING

import attrs
import trio

from agentd.changes import RunChanges
from agentd.mcp import DEFAULT_MCP_WAIT
from agentd.models import DEFAULT_MAX_STEPS, Finish, ModelRegistry, ModelRequest, Retrying, TextDelta, ToolCall, Turn
from agentd.models import Model as ModelProtocol
from agentd.permissions import Permissions
from agentd.protocol import MessageDelta, RunRetry, RunStarted, ToolResultPart, events, unstructure
from agentd.pubsub import Broker
from agentd.runs import Run, RunTerminal, describe_error
from agentd.store import Store
from agentd.tools import TOOLS, ToolContext, ToolSpec, definitions

from ._history import call_part, result_part, turns
from ._prompt import read_instructions, system_prompt
from ._tool_step import ToolStep

if TYPE_CHECKING:
    from agentd.mcp._servers import WorkspaceMcp

__all__ = ["Coordinator", "SessionAgent"]

log = logging.getLogger(__name__)


# How often a streaming answer's text so far is saved.
PARTIAL_SAVE_INTERVAL = 1.0


class Coordinator:
    def __init__(
        self,
        workspace_path: str,
        store: Store,
        models: ModelRegistry,
        broker: Broker,
        terminal: RunTerminal,
        permissions: Permissions,
        mcp: WorkspaceMcp | None = None,
        refresh_mcp: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._agent = SessionAgent(workspace_path, store, broker, terminal, permissions, mcp)
        self._models = models
        self._mcp = mcp
        self._refresh_mcp = refresh_mcp

    async def run(self, run: Run) -> None:
        model = await self._models.resolve(run.model)
        # Read per run: a changed configuration applies from the next run on (its MCP servers too).
        config = self._models.config
        if self._refresh_mcp is not None:
            await self._refresh_mcp()
        hidden = config.key_variables()
        secrets = config.tool_secrets(os.environ)
        if self._mcp is not None:
            secrets |= self._mcp.secrets(run.session_id)
        shield = ToolShield(environment={k: v for k, v in os.environ.items() if k not in hidden}, secrets=secrets)
        await self._agent.run(run, model, config.agent.max_steps, shield, config.agent.mcp_wait)


@attrs.frozen
class ToolShield:
    """What keeps a provider's key from a run's tools: their environment lacks it, and their results are redacted."""

    environment: Mapping[str, str] | None = None
    secrets: Mapping[str, str] = attrs.field(factory=dict)


@attrs.define
class _Outcome:
    """How the run is going, for its RunComplete whatever ends it."""

    # The last assistant message, and whether a step already finished it.
    message_id: str | None = None
    message_finished: bool = False
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    cancelled: bool = False
    stop_reason: str | None = None


class SessionAgent:
    def __init__(
        self,
        workspace_path: str,
        store: Store,
        broker: Broker,
        terminal: RunTerminal,
        permissions: Permissions,
        mcp: WorkspaceMcp | None = None,
    ) -> None:
        self._workspace_path = workspace_path
        self._store = store
        self._broker = broker
        self._terminal = terminal
        self._permissions = permissions
        self._mcp = mcp

    async def run(
        self,
        run: Run,
        model: ModelProtocol,
        max_steps: int = DEFAULT_MAX_STEPS,
        shield: ToolShield | None = None,
        mcp_wait: float = DEFAULT_MCP_WAIT,
    ) -> None:
        store, broker = self._store, self._broker
        # The prompt is the user's: it is kept even when the run was cancelled
        # before it began, so this part cannot be cancelled.
        with trio.CancelScope(shield=True):
            await store.start_run(run.id)
            user_message = await store.add_message(run.session_id, "user", run.prompt, run.id, "stop")
            broker.publish(events.MESSAGE_CREATED, unstructure(user_message))

        outcome = _Outcome()
        # Every write of the run's tools is recorded, for run.changes and run.revert.
        changes = RunChanges(store, self._workspace_path, run.id, run.session_id)
        try:
            broker.publish(events.RUN_STARTED, unstructure(RunStarted(run.session_id, run.id)))
            if model.uses_history:
                # One read, of what a provider sees: the conversation, the prompt last.
                history = turns(await store.conversation(run.session_id))
            else:
                # The run's own turns only: the prompt, then its tool steps.
                history = [Turn("user", run.prompt)]
            system = system_prompt(self._workspace_path, await read_instructions(self._workspace_path))
            if self._mcp is not None:
                # Bounded: a slow server's tools come at a later turn, or the next run.
                await self._mcp.wait_starting(run.session_id, mcp_wait)
            shield = shield or ToolShield()
            context = ToolContext(
                root=self._workspace_path, changes=changes, environment=shield.environment, secrets=shield.secrets
            )
            for step in range(1, max_steps + 1):
                # Each turn offers what is ready now: a server that came up since adds its tools.
                tools = self._tools(run)
                request = ModelRequest(system, tuple(history), definitions(tools))
                calls = await self._model_turn(run, model, request, outcome)
                if not calls:
                    break
                history.append(Turn("assistant", outcome.text, tool_calls=tuple(calls)))
                results = await self._tool_turn(run, calls, context, tools)
                history.append(Turn("tool", "", tool_results=tuple(result_part(r) for r in results)))
                if step == max_steps:
                    outcome.stop_reason = "step_limit"
                    outcome.error = (
                        f"stopped after {max_steps} model turns, the step limit"
                        " ([agent] max_steps in the configuration)"
                    )
        except BaseException as exc:
            outcome.cancelled, outcome.error = _classify(exc)
            raise
        finally:
            o = outcome
            if o.error is not None:
                reason = "error"
            elif o.cancelled:
                reason = "cancelled"
            else:
                # A stream that simply ends has finished normally.
                reason = o.finish_reason or "stop"
            stop_reason = o.stop_reason
            if stop_reason is None and reason in ("length", "refusal"):
                stop_reason = reason
            # The terminal finishes the message and records the RunComplete in
            # one transaction, then publishes both: shielded and bounded there.
            await self._terminal.complete(
                run,
                message_id=o.message_id,
                text=o.text,
                error=o.error,
                cancelled=o.cancelled,
                finish_reason=None if o.message_finished else reason,
                changes=changes.count,
                stop_reason=stop_reason,
            )

    async def _model_turn(
        self, run: Run, model: ModelProtocol, request: ModelRequest, outcome: _Outcome
    ) -> list[ToolCall]:
        """One model turn into a new assistant message; the tool calls it asks for (none: the run's answer)."""
        store, broker = self._store, self._broker
        assistant = await store.add_message(run.session_id, "assistant", "", run.id)
        outcome.message_id, outcome.message_finished, outcome.text = assistant.id, False, ""
        outcome.finish_reason = None
        message_id = assistant.id
        broker.publish(events.MESSAGE_CREATED, unstructure(assistant))
        text_parts: list[str] = []
        length = 0
        calls: list[ToolCall] = []
        # Deltas are not written one by one: the text so far is saved now
        # and then (so a crash keeps most of it), and in full at the end.
        saved_at = trio.current_time()
        try:
            async with aclosing(model.stream(request)) as stream:  # type: ignore[type-var]
                async for part in stream:
                    if isinstance(part, TextDelta):
                        if not part.text:
                            continue
                        broker.publish(
                            events.MESSAGE_DELTA,
                            unstructure(MessageDelta(run.session_id, run.id, message_id, length, part.text)),
                        )
                        text_parts.append(part.text)
                        length += len(part.text)
                        if trio.current_time() - saved_at >= PARTIAL_SAVE_INTERVAL:
                            await _save_partial_text(store, run, message_id, "".join(text_parts))
                            saved_at = trio.current_time()
                    elif isinstance(part, ToolCall):
                        calls.append(part)
                    elif isinstance(part, Finish):
                        outcome.finish_reason = part.reason
                        if part.usage.prompt_tokens or part.usage.completion_tokens:
                            await store.add_usage(
                                run.session_id, part.usage.prompt_tokens, part.usage.completion_tokens
                            )
                    elif isinstance(part, Retrying):
                        broker.publish(
                            events.RUN_RETRY,
                            unstructure(RunRetry(run.session_id, run.id, part.attempt, part.delay, part.reason)),
                        )
        finally:
            outcome.text = "".join(text_parts)
        if not calls or outcome.finish_reason not in (None, "tool_calls"):
            # An answer cut short ("length") or refused: calls it may have begun are not run.
            return []
        # The turn is over: its message is finished with the calls it made,
        # before any of them runs, so a crash meanwhile still shows what was asked.
        message = await store.update_message(
            message_id, outcome.text, "tool_calls", parts=tuple(call_part(c) for c in calls)
        )
        outcome.message_finished = True
        broker.publish(events.MESSAGE_UPDATED, unstructure(message))
        return calls

    def _tools(self, run: Run) -> Mapping[str, ToolSpec]:
        if self._mcp is None:
            return TOOLS
        offered = self._mcp.tools(run.session_id, set(TOOLS))
        return {**TOOLS, **offered} if offered else TOOLS

    async def _tool_turn(
        self, run: Run, calls: list[ToolCall], context: ToolContext, tools: Mapping[str, ToolSpec]
    ) -> list[ToolResultPart]:
        """Run the calls; their results are stored as one tool message, also when the run is cancelled meanwhile."""
        step = ToolStep(run, self._broker, self._permissions, context, tools)
        try:
            await step.run(calls)
        finally:
            # The model's next turn, or the next run's history, needs a result for every call.
            with self._terminal.shielded():
                message = await self._store.add_message(
                    run.session_id, "tool", "", run.id, "stop", parts=tuple(step.results)
                )
                self._broker.publish(events.MESSAGE_CREATED, unstructure(message))
        return step.results


async def _save_partial_text(store: Store, run: Run, message_id: str, text: str) -> None:
    """Best effort: the text so far, for a crash to keep. A refusal is logged, never the run's end."""
    try:
        await store.update_message(message_id, text, None)
    except Exception as exc:
        # The run goes on: its end is written in full, or kept aside, by the terminal.
        log.warning("run %s: saving the text so far failed (the run goes on): %s", run.id, exc)


def _classify(exc: BaseException) -> tuple[bool, str | None]:
    """(cancelled, error) for what ended a run; an error wins over a cancel it raced with."""
    if isinstance(exc, trio.Cancelled):
        return True, None
    if isinstance(exc, BaseExceptionGroup):
        cancels, rest = exc.split(trio.Cancelled)
        if rest is None:
            return True, None
        return False, describe_error(rest)
    return False, describe_error(exc)
