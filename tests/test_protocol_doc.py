"""docs/protocol.md and the method table agree: every method, each argument and each reply field is documented."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest

from agentd.server._methods import Methods

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
METHODS = Methods(None)  # type: ignore[arg-type]  # the table only; nothing is called


def _sections(level: str) -> dict[str, str]:
    parts = re.split(rf"^{level} (.+)$", DOC, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


METHOD_SECTIONS = _sections("###")


def _attrs_class(result: Any) -> type | None:
    """The attrs class a reply is, or is a list of."""
    if typing.get_origin(result) is list:
        (result,) = typing.get_args(result)
    return result if attrs.has(result) else None


def _mentioned(field: str, text: str) -> bool:
    # As the docs write a field: in a table or prose (`name`), in a JSON example ("name"),
    # or in a type sketch ({name: ..., or , name}).
    return f"`{field}`" in text or f'"{field}"' in text or re.search(rf"[{{,]\s*{field}\b", text) is not None


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_has_a_section_naming_its_arguments(name: str) -> None:
    assert name in METHOD_SECTIONS, f"docs/protocol.md has no '### {name}' section"
    section = METHOD_SECTIONS[name]
    params = METHODS.method(name).params_type
    missing = [f.name for f in attrs.fields(params) if f"`{f.name}`" not in section]
    assert not missing, f"{name}: arguments not documented: {missing}"


@pytest.mark.parametrize("name", METHODS.names())
def test_every_reply_field_is_documented_with_its_method_or_its_record(name: str) -> None:
    cls = _attrs_class(METHODS.method(name).result_type)
    assert cls is not None
    # A reply that is a record (Session, Message, RunComplete...) is documented once, in §3.
    text = METHOD_SECTIONS[name] + METHOD_SECTIONS.get(cls.__name__, "")
    missing = [f.name for f in attrs.fields(cls) if not _mentioned(f.name, text)]
    assert not missing, f"{name}: reply fields of {cls.__name__} not documented: {missing}"


def test_no_section_documents_a_method_the_daemon_does_not_have() -> None:
    documented = {title for title in METHOD_SECTIONS if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+|initialize|ping", title)}
    assert documented - set(METHODS.names()) == set()


def test_every_event_type_is_documented_with_its_delivery_class_and_nothing_else_is() -> None:
    from agentd.event_types import EVENT_TYPES, LOGGED

    section = DOC.split("### 5.2 Event types", 1)[1].split("###", 1)[0]
    row = r"^\| `([a-z_.]+)` \| .*? \| (lossy|must-deliver|per subscriber, never dropped) \|"
    rows = dict(re.findall(row, section, re.M))
    assert set(rows) == set(EVENT_TYPES)
    for name, (must_deliver, _logged) in EVENT_TYPES.items():
        assert (rows[name] == "must-deliver") is must_deliver, name
    # "Every type except A, B and C is also written to the workspace's event log".
    except_clause = re.search(r"Every type except (.+?) is also written", section, re.S)
    assert except_clause is not None
    assert set(re.findall(r"`([a-z_.]+)`", except_clause.group(1))) == set(EVENT_TYPES) - LOGGED
