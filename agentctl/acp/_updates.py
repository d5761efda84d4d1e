"""What ACP is told about an agentd session: its events and its stored messages as `session/update`s. No I/O.

Interface (the bridge depends on exactly this; see docs/acp.md once written):

    view = SessionView(session_id, root)    # one per ACP session (= agentd session id); root: the workspace's path
    view.started(run_id)                    # a run this bridge sends (before agent.send: its events may beat the
                                            # reply): its prompt is the editor's own, not echoed back
    updates = view.take(envelope)           # an agentd event envelope -> list of ACP `update` objects
    updates = view.replay(messages)         # session.messages (stored) -> the updates session/load sends;
                                            # the live events that follow then go on from where it left off
    updates = replay(messages, root)        # the same, for a view of its own
    params = permission_params(payload, root)  # a permission.request payload -> session/request_permission params
    action = grant_action(outcome)          # the editor's RequestPermissionResponse.outcome -> permission.grant action
    reason = stop_reason(run_complete)      # a RunComplete payload -> PromptResponse.stopReason, or None for an error

Every `update` is a JSON-ready dict with `sessionUpdate` set ("agent_message_chunk",
"user_message_chunk", "tool_call", "tool_call_update"); the bridge wraps it as
`{"sessionId": ..., "update": ...}`. No `usage_update` is made: ACP's counts the
tokens in the context against the context window's size, and agentd reports
neither (a RunComplete has no token counts; a Session has the tokens its calls
used, summed).

A view takes every event of its session, whichever client started the run:
two editors on one session see each other's runs. Events of other sessions of
the workspace give nothing.
"""

from __future__ import annotations

from agentd import event_types as events

from . import _tools

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


__all__ = [
    "GRANT_OPTIONS",
    "SessionView",
    "grant_action",
    "permission_params",
    "replay",
    "stop_reason",
]


class SessionView:
    """One ACP session's view of an agentd session: what the editor was told so far, so each update is told once.

    ACP cannot take back a chunk: text is sent as it streams, and what a
    finished message has beyond it (deltas lost on the way) follows as one last
    chunk; a text that differs from what streamed is not repaired.
    """

    def __init__(self, session_id: str, root: str) -> None:
        self.session_id = session_id
        self.root = root
        self._own_runs: set[str] = set()
        # Prompts told already (replayed), by message id: a load's events may repeat them.
        self._told_prompts: set[str] = set()
        # Characters of each assistant message sent as chunks, by message id.
        self._sent: dict[str, int] = {}
        # The run of each message in `_sent`, so a finished run's entries can go.
        self._message_run: dict[str, str] = {}
        # Tool calls by call id: (tool name, decoded arguments). The arguments come
        # in the assistant message's parts, before the call starts.
        self._calls: dict[str, tuple[str, dict[str, Any] | None]] = {}
        # Calls a load told already, by call id: True once told in their final state.
        # Their live events may follow the replay; a call is made once, and never goes back to running.
        self._replayed_calls: dict[str, bool] = {}

    def started(self, run_id: str) -> None:
        """Mark a run this bridge sent: the editor shows its prompt already."""
        self._own_runs.add(run_id)

    def take(self, envelope: dict[str, Any]) -> list[dict[str, Any]]:
        kind = envelope.get("type")
        payload = envelope.get("payload")
        if not isinstance(payload, dict) or payload.get("session_id") != self.session_id:
            return []
        if kind == events.MESSAGE_DELTA:
            return self._delta(payload)
        if kind == events.MESSAGE_CREATED:
            return self._created(payload)
        if kind == events.MESSAGE_UPDATED:
            if payload.get("role") != "assistant":
                return []
            self._note_calls(payload.get("parts"))
            return self._tail(payload.get("id"), payload.get("run_id"), payload.get("text"))
        if kind == events.TOOL_STARTED:
            return self._tool_started(payload)
        if kind == events.TOOL_FINISHED:
            return self._tool_finished(payload)
        if kind == events.RUN_COMPLETE:
            updates = self._tail(payload.get("message_id"), payload.get("run_id"), payload.get("text"))
            self._forget_run(payload.get("run_id"))
            return updates
        return []

    def replay(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A stored conversation as updates: the prompts, the answers, and each tool call in its final state."""
        results: dict[str, dict[str, Any]] = {}
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "tool":
                for part in _parts(message.get("parts"), "tool_result"):
                    results[part["call_id"]] = part
        updates: list[dict[str, Any]] = []
        for message in messages:
            if not isinstance(message, dict):
                continue
            role, text, message_id = message.get("role"), message.get("text"), message.get("id")
            if role == "user" and isinstance(text, str) and text:
                updates.append(_chunk("user_message_chunk", text, message_id))
                if isinstance(message_id, str):
                    self._told_prompts.add(message_id)
            elif role == "assistant":
                if isinstance(text, str) and isinstance(message_id, str):
                    updates += self._tail(message_id, message.get("run_id"), text)
                self._note_calls(message.get("parts"))
                for part in _parts(message.get("parts"), "tool_call"):
                    result = results.get(part["call_id"])
                    updates.append(self._stored_call(part, result))
                    self._replayed_calls[part["call_id"]] = result is not None
        return updates

    # --- text ---------------------------------------------------------------

    def _delta(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        message_id, offset, text = payload.get("message_id"), payload.get("offset"), payload.get("text")
        if not isinstance(message_id, str) or not isinstance(offset, int) or not isinstance(text, str):
            return []
        sent = self._sent.get(message_id, 0)
        # A delta past a hole (deltas were lost) waits for the finished text, which fills it.
        if offset > sent:
            return []
        return self._send(message_id, payload.get("run_id"), text[sent - offset :])

    def _tail(self, message_id: Any, run_id: Any, text: Any) -> list[dict[str, Any]]:
        """The finished (or stored) text beyond what was sent."""
        if not isinstance(message_id, str) or not isinstance(text, str):
            return []
        return self._send(message_id, run_id, text[self._sent.get(message_id, 0) :])

    def _send(self, message_id: str, run_id: Any, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        self._sent[message_id] = self._sent.get(message_id, 0) + len(text)
        if isinstance(run_id, str):
            self._message_run[message_id] = run_id
        return [_chunk("agent_message_chunk", text, message_id)]

    def _forget_run(self, run_id: Any) -> None:
        # Nothing of a run comes after its run.complete: its messages are done.
        done = [m for m, r in self._message_run.items() if r == run_id]
        for message_id in done:
            del self._message_run[message_id]
            self._sent.pop(message_id, None)
        self._own_runs.discard(run_id)

    def _created(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        role = payload.get("role")
        if role == "user":
            text = payload.get("text")
            if payload.get("run_id") in self._own_runs or payload.get("id") in self._told_prompts:
                return []
            if not isinstance(text, str) or not text:
                return []
            return [_chunk("user_message_chunk", text, payload.get("id"))]
        if role == "tool":
            # The full results: they replace the summaries tool.finished gave.
            return [self._result_update(part) for part in _parts(payload.get("parts"), "tool_result")]
        return []

    # --- tool calls ---------------------------------------------------------

    def _note_calls(self, parts: Any) -> None:
        for part in _parts(parts, "tool_call"):
            self._calls[part["call_id"]] = (str(part.get("name")), _tools.decode_arguments(part.get("arguments")))

    def _tool_started(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        call_id, name = payload.get("call_id"), payload.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            return []
        replayed = self._replayed_calls.get(call_id)
        if replayed:
            return []
        _name, args = self._calls.get(call_id, (name, None))
        summary = payload.get("summary")
        update: dict[str, Any] = {
            "sessionUpdate": "tool_call" if replayed is None else "tool_call_update",
            "toolCallId": call_id,
            "title": summary if isinstance(summary, str) and summary else _tools.title(name, args),
            "kind": _tools.tool_kind(name),
            "status": "in_progress",
            "locations": _tools.locations(name, args, self.root),
        }
        if args is not None:
            update["rawInput"] = args
        return [update]

    def _tool_finished(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        call_id = payload.get("call_id")
        if not isinstance(call_id, str) or self._replayed_calls.get(call_id):
            return []
        summary = payload.get("summary")
        return [self._finished(call_id, payload.get("name"), payload.get("status"), summary)]

    def _result_update(self, part: dict[str, Any]) -> dict[str, Any]:
        output = part.get("output")
        text = output if isinstance(output, str) and output else part.get("summary")
        update = self._finished(part["call_id"], part.get("name"), part.get("status"), text)
        # The call is over: nothing more will be said of it.
        self._calls.pop(part["call_id"], None)
        return update

    def _finished(self, call_id: str, name: Any, status: Any, text: Any) -> dict[str, Any]:
        known_name, args = self._calls.get(call_id, (name, None))
        return {
            "sessionUpdate": "tool_call_update",
            "toolCallId": call_id,
            "status": _tools.status(status),
            "content": _tools.call_content(
                str(known_name), args, status, text if isinstance(text, str) else "", self.root
            ),
        }

    def _stored_call(self, part: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
        name = str(part.get("name"))
        args = _tools.decode_arguments(part.get("arguments"))
        update: dict[str, Any] = {
            "sessionUpdate": "tool_call",
            "toolCallId": part["call_id"],
            "title": _tools.title(name, args),
            "kind": _tools.tool_kind(name),
            # No result stored yet: the call is running now (its events follow) or its run was cut short.
            "status": "in_progress",
            "locations": _tools.locations(name, args, self.root),
        }
        if args is not None:
            update["rawInput"] = args
        if result is not None:
            output = result.get("output")
            text = output if isinstance(output, str) and output else result.get("summary")
            update["status"] = _tools.status(result.get("status"))
            update["content"] = _tools.call_content(
                name, args, result.get("status"), text if isinstance(text, str) else "", self.root
            )
            self._calls.pop(part["call_id"], None)
        return update


def _chunk(kind: str, text: str, message_id: Any) -> dict[str, Any]:
    update: dict[str, Any] = {"sessionUpdate": kind, "content": {"type": "text", "text": text}}
    if isinstance(message_id, str):
        update["messageId"] = message_id
    return update


def _parts(parts: Any, kind: str) -> list[dict[str, Any]]:
    if not isinstance(parts, list):
        return []
    return [p for p in parts if isinstance(p, dict) and p.get("type") == kind and isinstance(p.get("call_id"), str)]


def replay(messages: list[dict[str, Any]], root: str) -> list[dict[str, Any]]:
    """`SessionView.replay` for a view of its own: the updates session/load sends for a stored conversation."""
    return SessionView("", root).replay(messages)


# --- permissions ------------------------------------------------------------

# ACP's option ids and kinds, and the permission.grant action each stands for:
# agentd's "for the session" answers are ACP's "always", kept as long as the session.
GRANT_OPTIONS: dict[str, tuple[str, str]] = {
    "allow_once": ("Allow once", "allow"),
    "allow_always": ("Allow for this session", "allow_session"),
    "reject_once": ("Deny", "deny"),
    "reject_always": ("Deny for this session", "deny_session"),
}


def permission_params(payload: dict[str, Any], root: str) -> dict[str, Any]:
    """session/request_permission's params for a permission.request: the call it is about, and the four answers."""
    tool = payload.get("tool")
    name = tool if isinstance(tool, str) else ""
    params = payload.get("params")
    args = params if isinstance(params, dict) else None
    description = payload.get("description")
    tool_call: dict[str, Any] = {
        "toolCallId": payload.get("call_id"),
        "title": description if isinstance(description, str) and description else _tools.title(name, args),
        "kind": _tools.tool_kind(name),
        "status": "pending",
        "locations": _tools.locations(name, args, root),
    }
    if args is not None:
        tool_call["rawInput"] = args
    return {
        "sessionId": payload.get("session_id"),
        "toolCall": tool_call,
        "options": [
            {"optionId": option_id, "name": label, "kind": option_id}
            for option_id, (label, _action) in GRANT_OPTIONS.items()
        ],
    }


def grant_action(outcome: Any) -> str:
    """The permission.grant action for the editor's answer; cancelled, or anything not one of our options, denies."""
    if not isinstance(outcome, dict) or outcome.get("outcome") != "selected":
        return "deny"
    option_id = outcome.get("optionId")
    option = GRANT_OPTIONS.get(option_id) if isinstance(option_id, str) else None
    return option[1] if option is not None else "deny"


# agentd's stop reasons that end a turn with ACP's own name for them; the rest end it as end_turn.
_STOP_REASONS = {
    # The agent loop's step limit is ACP's limit on model requests in a turn.
    "step_limit": "max_turn_requests",
    "length": "max_tokens",
    "refusal": "refusal",
}


def stop_reason(run_complete: dict[str, Any]) -> str | None:
    """PromptResponse.stopReason for a RunComplete, or None when the run failed (the bridge answers with an error)."""
    if run_complete.get("cancelled"):
        return "cancelled"
    reason = run_complete.get("stop_reason")
    # The step limit sets an error too, saying so; it is still a turn that ended, not a failure.
    if reason in _STOP_REASONS:
        return _STOP_REASONS[reason]
    if run_complete.get("error"):
        return None
    return "end_turn"
