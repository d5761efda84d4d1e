"""A run: one prompt's trip through a model, from accept to its one RunComplete."""

from __future__ import annotations

import enum
import time

import attrs
import trio

from agentd.protocol import QueuedPrompt, RunComplete

__all__ = ["Run", "RunState"]


class RunState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@attrs.define(eq=False)
class Run:
    id: str
    workspace_id: str
    session_id: str
    prompt: str
    model: str | None
    created_at: float = attrs.field(factory=time.time)
    state: RunState = RunState.QUEUED
    # Created at accept, entered when the run starts: a cancel that lands in
    # between is not lost, because a scope cancelled before it is entered
    # cancels everything inside it at the first checkpoint.
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    # The per-run marker: set exactly once, by the terminal publisher, when the
    # run's RunComplete is decided. The dispatcher's fallback reads it.
    complete: RunComplete | None = None
    # Set once `complete` is recorded; what `run.wait` waits on.
    finished: trio.Event = attrs.field(factory=trio.Event)
    # Why the run was stopped when nobody asked (its workspace failed): then
    # its cancellation ends it errored with this, not cancelled.
    abort_error: str | None = None
    # Permission rules for this run only, from agent.send (`*`: allow everything).
    allow: tuple[str, ...] = ()

    def queued_prompt(self) -> QueuedPrompt:
        return QueuedPrompt(run_id=self.id, prompt=self.prompt)
