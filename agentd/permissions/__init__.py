"""Interim: the permission board's interface, until the board lands. Reads are allowed; anything else is denied."""

from __future__ import annotations

from typing import Any

import attrs

from agentd.protocol import PermissionOutcome

__all__ = ["PermissionAsk", "Permissions"]


@attrs.frozen
class PermissionAsk:
    session_id: str
    run_id: str
    call_id: str
    tool: str
    kind: str
    subject: str | None
    description: str
    params: dict[str, Any]
    run_rules: tuple[str, ...] = ()


class Permissions:
    async def authorize(self, ask: PermissionAsk) -> PermissionOutcome:
        if ask.kind == "read" or "*" in ask.run_rules or ask.tool in ask.run_rules:
            return "allow"
        return "deny"

    def cancel_run(self, run_id: str) -> None:
        pass
