"""What ACP is told about an agentd session: its events and its stored messages as `session/update`s. No I/O.

Interface (the bridge depends on exactly this; see docs/acp.md once written):

    view = SessionView(session_id)          # one per ACP session (= agentd session id)
    updates = view.take(envelope)           # an agentd event envelope -> list of ACP `update` objects
    updates = replay(messages)              # session.messages (stored) -> the updates session/load sends
    params = permission_params(payload)     # a permission.request payload -> session/request_permission params
    action = grant_action(outcome)          # the editor's RequestPermissionResponse.outcome -> permission.grant action
    reason = stop_reason(run_complete)      # a RunComplete payload -> PromptResponse.stopReason, or None for an error

Every `update` is a JSON-ready dict with `sessionUpdate` set ("agent_message_chunk",
"user_message_chunk", "tool_call", "tool_call_update", "usage_update"); the bridge
wraps it as `{"sessionId": ..., "update": ...}`.
"""
