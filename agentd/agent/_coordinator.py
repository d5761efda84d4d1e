"""The coordinator and the session agent: what a run does once it is dispatched.

The coordinator prepares the run (resolves its model); whatever fails there
fails before the session agent ran, and the dispatcher's fallback reports it.
The session agent runs the model and publishes the run's messages and then its
authoritative RunComplete, whatever ends it: a finish, an error, a cancel.
"""

from __future__ import annotations

import datetime
import logging
import platform
from contextlib import aclosing

import trio

from agentd.models import Finish, ModelRegistry, ModelRequest, Retrying, TextDelta, Turn
from agentd.models import Model as ModelProtocol
from agentd.protocol import MessageDelta, RunStarted, events, unstructure
from agentd.pubsub import Broker
from agentd.runs import Run, RunTerminal, describe_error
from agentd.store import Store

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
    ) -> None:
        self._workspace_path = workspace_path
        self._store = store
        self._models = models
        self._broker = broker
        self._terminal = terminal

    async def run(self, run: Run) -> None:
        model = await self._models.resolve(run.model)
        agent = SessionAgent(self._workspace_path, self._store, self._broker, self._terminal)
        await agent.run(run, model)


def system_prompt(workspace_path: str) -> str:
    return (
        "You are a coding agent working in a project directory.\n"
        f"Working directory: {workspace_path}\n"
        f"Date: {datetime.date.today().isoformat()}\n"
        f"OS: {platform.system()} {platform.release()}"
    )


class SessionAgent:
    def __init__(self, workspace_path: str, store: Store, broker: Broker, terminal: RunTerminal) -> None:
        self._workspace_path = workspace_path
        self._store = store
        self._broker = broker
        self._terminal = terminal

    async def run(self, run: Run, model: ModelProtocol) -> None:
        store, broker = self._store, self._broker
        # The prompt is the user's: it is kept even when the run was cancelled
        # before it began, so this part cannot be cancelled.
        with trio.CancelScope(shield=True):
            await store.start_run(run.id)
            user_message = await store.add_message(run.session_id, "user", run.prompt, run.id, "stop")
            broker.publish(events.MESSAGE_CREATED, unstructure(user_message))

        message_id: str | None = None
        text_parts: list[str] = []
        length = 0
        finish_reason: str | None = None
        error: str | None = None
        cancelled = False
        try:
            broker.publish(events.RUN_STARTED, unstructure(RunStarted(run.session_id, run.id)))
            if model.uses_history:
                # One read, of what a provider sees: the conversation, the prompt last.
                history = tuple(Turn(role, text) for role, text in await store.conversation(run.session_id))
            else:
                history = (Turn("user", run.prompt),)
            request = ModelRequest(system=system_prompt(self._workspace_path), history=history)
            assistant = await store.add_message(run.session_id, "assistant", "", run.id)
            message_id = assistant.id
            broker.publish(events.MESSAGE_CREATED, unstructure(assistant))
            # Deltas are not written one by one: the text so far is saved now
            # and then (so a crash keeps most of it), and in full at the end.
            saved_at = trio.current_time()
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
                    elif isinstance(part, Finish):
                        finish_reason = part.reason
                        if part.usage.prompt_tokens or part.usage.completion_tokens:
                            await store.add_usage(
                                run.session_id, part.usage.prompt_tokens, part.usage.completion_tokens
                            )
                    elif isinstance(part, Retrying):
                        broker.publish(
                            events.RUN_RETRY,
                            {
                                "session_id": run.session_id,
                                "run_id": run.id,
                                "attempt": part.attempt,
                                "delay": part.delay,
                                "reason": part.reason,
                            },
                        )
        except BaseException as exc:
            cancelled, error = _classify(exc)
            raise
        finally:
            text = "".join(text_parts)
            if error is not None:
                reason = "error"
            elif cancelled:
                reason = "cancelled"
            else:
                # A stream that simply ends has finished normally.
                reason = finish_reason or "stop"
            # The terminal finishes the message and records the RunComplete in
            # one transaction, then publishes both: shielded and bounded there.
            await self._terminal.complete(
                run, message_id=message_id, text=text, error=error, cancelled=cancelled, finish_reason=reason
            )


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
