"""Allow rules: what `[permissions] allow`, `agent.send`'s `allow` and `--allow` say, and which calls they allow.

No I/O: a rule is parsed from its text once, and matched against a tool call's
name and subject (bash: its command).

    "*"               every call of every tool
    "edit"            every call of the tool `edit`
    "bash:git status" bash commands that start with the words `git status`

A prefix matches whole words: after leading whitespace, the command must be
the prefix's words, separated by any whitespace, followed by whitespace or
nothing (`git status` allows `git status --short`, not `git statusx`). What
follows the prefix may not hold anything that makes the shell do more than
run that one command with arguments — `;`, `&` (`&&`, background), `|`,
backticks, `$(`, `<` and `>` (redirections, process substitution), a
newline — even inside quotes: such a command is asked about, never allowed by
a prefix. The prefix itself is the user's and is taken as written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import attrs

__all__ = ["ANY", "Rule", "RuleError", "allows", "parse_rule", "parse_rules", "rule_problem"]

# The rule that allows everything (`agentctl run --yolo`).
ANY = "*"

_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# After a prefix, any of these makes a command more than the one the rule allows.
_SHELL_MORE = re.compile(r"[;&|`<>\n\r]|\$\(")


class RuleError(ValueError):
    """A rule that cannot be read; the message says why."""


@attrs.frozen
class Rule:
    # A tool's name, or ANY.
    tool: str
    # Words a call's subject must start with; None: any call of the tool.
    prefix: tuple[str, ...] | None = None
    _pattern: re.Pattern[str] | None = attrs.field(default=None, eq=False, repr=False)

    def allows(self, tool: str, subject: str | None) -> bool:
        if self.tool == ANY:
            return True
        if tool != self.tool:
            return False
        if self._pattern is None:
            return True
        if subject is None:
            return False  # the tool has no subject for a prefix to match
        matched = self._pattern.match(subject)
        return matched is not None and _SHELL_MORE.search(subject, matched.end()) is None


def parse_rule(text: str) -> Rule:
    """The rule `text` says; RuleError names what is wrong with it."""
    tool, colon, prefix = text.partition(":")
    tool = tool.strip()
    if not tool:
        raise RuleError("names no tool (write TOOL or TOOL:PREFIX)")
    if tool == ANY:
        if colon:
            raise RuleError("'*' allows every call and takes no prefix")
        return Rule(ANY)
    if not _TOOL_NAME.fullmatch(tool):
        raise RuleError(f"tool name {tool!r} may hold only letters, digits, '_', '.' and '-'")
    if not colon:
        return Rule(tool)
    words = tuple(prefix.split())
    if not words:
        raise RuleError(f"has an empty prefix after '{tool}:' (write {tool!r} alone to allow every call)")
    pattern = re.compile(r"\s*" + r"\s+".join(re.escape(word) for word in words) + r"(?=\s|$)")
    return Rule(tool, words, pattern)


def rule_problem(text: str) -> str | None:
    """What is wrong with `text` as a rule, or None."""
    try:
        parse_rule(text)
    except RuleError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=256)
def parse_rules(texts: tuple[str, ...]) -> tuple[Rule, ...]:
    """Rules from their texts (checked already: config and params are validated where they are read)."""
    return tuple(parse_rule(text) for text in texts)


def allows(rules: Iterable[Rule], tool: str, subject: str | None) -> bool:
    """Whether any of `rules` allows a call of `tool` with `subject`."""
    return any(rule.allows(tool, subject) for rule in rules)
