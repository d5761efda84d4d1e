"""Permissions: which tool calls run without asking, and the requests that wait for a person's answer."""

from ._board import ACTIONS, PermissionAsk, Permissions
from ._rules import ANY, Rule, RuleError, allows, parse_rule, parse_rules, rule_problem
from ._settings import DEFAULT_PERMISSION_TIMEOUT, PermissionSettings

__all__ = [
    "ACTIONS",
    "ANY",
    "DEFAULT_PERMISSION_TIMEOUT",
    "PermissionAsk",
    "PermissionSettings",
    "Permissions",
    "Rule",
    "RuleError",
    "allows",
    "parse_rule",
    "parse_rules",
    "rule_problem",
]
