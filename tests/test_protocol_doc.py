"""docs/protocol.md and the code agree, both ways.

Every method with its arguments (type, required, default), its reply fields and
its errors (each documented message is one a raise site gives, with that code,
and each raise site's message is documented); every event type with its
delivery class and its payload's fields (against `EVENT_PAYLOADS`, the publish
calls in agentd/, and the events a real daemon sends); the wire examples, the
links, and the order of a run's events.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest
from mcp_servers import toolbox
from support import DaemonFactory, Events, Workspace, open_workspace

from agentd import event_types
from agentd.protocol import EVENT_PAYLOADS
from agentd.rpc import ErrorCode
from agentd.server._methods import _CODES, Methods

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


# --- event payloads --------------------------------------------------------------

EVENT_TABLE = DOC.split("### 5.2 Event types", 1)[1].split("\n### ", 1)[0]
_parts = re.split(r"^#### `([a-z_.]+)`$", EVENT_TABLE, flags=re.M)
PAYLOAD_SECTIONS = dict(zip(_parts[1::2], _parts[2::2], strict=True))


def _table_fields(text: str) -> set[str]:
    """The field names a section's tables document: the first cell of each row."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M))


def _record_section(payload: type) -> str | None:
    """§3's section for a payload that is a record (Session, Message, RunComplete), else None."""
    return METHOD_SECTIONS.get(payload.__name__)


@pytest.mark.parametrize("kind", sorted(EVENT_PAYLOADS))
def test_every_event_payload_field_is_documented_and_nothing_else_is(kind: str) -> None:
    fields = {f.name for cls in EVENT_PAYLOADS[kind] for f in attrs.fields(cls)}
    (record,) = {_record_section(cls) for cls in EVENT_PAYLOADS[kind]}
    row = re.search(rf"^\| `{re.escape(kind)}` \| (.*?) \|", EVENT_TABLE, re.M)
    assert row is not None, f"{kind} has no row in §5.2"
    if record is not None:
        # A record is documented once, in §3, and the row links it.
        (cls,) = EVENT_PAYLOADS[kind]
        assert f"[{cls.__name__}](#{cls.__name__.lower()})" in row.group(1), kind
        documented = _table_fields(record)
    else:
        assert kind in PAYLOAD_SECTIONS, f"docs/protocol.md has no '#### `{kind}`' section in §5.2"
        assert f"(#{kind.replace('.', '')})" in row.group(1), f"{kind}'s row does not link its section"
        documented = _table_fields(PAYLOAD_SECTIONS[kind])
    assert documented - fields == set(), f"{kind}: documented fields the payload does not have"
    assert fields - documented == set(), f"{kind}: payload fields not documented"


def test_no_payload_section_documents_an_event_the_daemon_does_not_publish() -> None:
    assert set(PAYLOAD_SECTIONS) - set(EVENT_PAYLOADS) == set()


def _payload_fields(kind: str) -> list[set[str]]:
    return [{f.name for f in attrs.fields(cls)} for cls in EVENT_PAYLOADS[kind]]


async def test_the_events_a_daemon_sends_carry_exactly_their_payload_types_fields(
    start_daemon: DaemonFactory, project: Path
) -> None:
    # Every event a run, a permission, a failure, a replay and an idle close
    # publish, as a real daemon sends them. Not reached here: `run.retry`
    # (tests/test_models_e2e.py) and the live `events.gap` (tests/test_fanout.py),
    # whose tests check their keys, as the check of the publish calls below does.
    daemon = start_daemon("--idle-grace", "0.1")
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session = await ws.new_session("")
        script = {
            "steps": [
                {"tool_calls": [{"name": "write", "arguments": {"path": "a.txt", "content": "x"}}]},
                {"chunks": ["done"]},
            ]
        }
        run = await ws.send(session, script)
        request = await ws.events.until(lambda e: e["type"] == "permission.request")
        await client.call(
            "permission.grant",
            {"workspace_id": ws.id, "request_id": request["payload"]["request_id"], "action": "allow"},
        )
        assert (await ws.events.until_complete(run["run_id"]))["error"] is None
        await client.call("session.mcp_servers", {"workspace_id": ws.id, "session_id": session, "servers": [toolbox()]})
        await ws.events.until(lambda e: e["type"] == "mcp.status" and e["payload"]["server"]["state"] == "ready")
        failed = await ws.send(session, {"error": "boom"})
        await ws.events.until(lambda e: e["type"] == "agent.error" and e["payload"]["run_id"] == failed["run_id"])
        await ws.events.until(lambda e: e["type"] == "session.updated" and not e["payload"]["busy"])
        await client.call("session.delete", {"workspace_id": ws.id, "session_id": session})
        await ws.events.until(lambda e: e["type"] == "session.deleted")
        replay = await client.call("events.subscribe", {"workspace_id": ws.id, "since": 10**9})
        replayed = Events(client, replay["subscription_id"])
        await replayed.until(lambda e: e["type"] == "events.gap")
        await client.call("workspace.close", {"workspace_id": ws.id})
        await ws.events.until(lambda e: e["type"] == "workspace.closed")

    seen = ws.events.seen + replayed.seen
    assert {e["type"] for e in seen} == set(EVENT_PAYLOADS) - {"run.retry"}
    wrong = [(e["type"], sorted(e["payload"])) for e in seen if set(e["payload"]) not in _payload_fields(e["type"])]
    assert wrong == []


# --- errors ----------------------------------------------------------------------

ERROR_CODES = {code: name.lower().replace("_", " ") for name, code in vars(ErrorCode).items() if name.isupper()}
METHODS_INTRO = DOC.split("## 4. Methods", 1)[1].split("\n### ", 1)[0]


def _raised_messages() -> list[tuple[re.Pattern[str], int]]:
    """Every message the daemon gives a domain error, as a pattern (`.+` for what it fills in), with its wire code."""
    codes = {kind.__name__: code for kind, code in _CODES.items()}
    found = []
    for path in (Path(__file__).parent.parent / "agentd").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in codes):
                continue
            if not node.args:
                continue
            message = node.args[0]
            if isinstance(message, ast.Constant) and isinstance(message.value, str):
                pattern = re.escape(message.value)
            elif isinstance(message, ast.JoinedStr):
                pattern = "".join(
                    re.escape(str(part.value)) if isinstance(part, ast.Constant) else ".+" for part in message.values
                )
            else:
                continue
            found.append((re.compile(pattern), codes[node.func.id]))
    return found


RAISED = _raised_messages()


def _documented_errors(text: str) -> list[tuple[int, str]]:
    """The `- **N** `message`` bullets of a section."""
    return [(int(code), message) for code, message in re.findall(r"^- \*\*(\d+)\*\* `([^`]+)`", text, re.M)]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_states_its_errors_with_real_codes(name: str) -> None:
    section = METHOD_SECTIONS[name]
    assert re.search(r"^Errors\b", section, re.M), f"{name}: no 'Errors' paragraph"
    codes = {int(code) for code in re.findall(r"\*\*(\d+)\*\*", section)}
    assert codes <= set(ERROR_CODES), f"{name}: codes that do not exist: {sorted(codes - set(ERROR_CODES))}"


def test_the_error_table_names_every_code_as_the_code_does() -> None:
    table = DOC.split("## 2. Errors", 1)[1].split("**Validation messages.**", 1)[0]
    assert {int(code): name for code, name in re.findall(r"^\| (\d+) \| ([a-z ]+) \|", table, re.M)} == ERROR_CODES


@pytest.mark.parametrize("name", ["4. Methods", *METHODS.names()])
def test_every_documented_error_message_is_one_the_daemon_gives_with_that_code(name: str) -> None:
    section = METHODS_INTRO if name == "4. Methods" else METHOD_SECTIONS[name]
    wrong = []
    for code, message in _documented_errors(section):
        # `<id>`, `<path>`...: what the request named, as the daemon fills it in.
        sample = re.sub(r"<[^>]+>", "X", message)
        raised = {c for pattern, c in RAISED if pattern.fullmatch(sample)}
        if code not in raised:
            wrong.append((code, message, sorted(raised)))
    assert wrong == [], f"{name}: documented errors the daemon does not give (code, message, codes it gives): {wrong}"


def test_every_error_message_the_daemon_gives_is_documented() -> None:
    # As a method's error (§4), or among the params problems §2 lists.
    errors = DOC.split("## 2. Errors", 1)[1].split("\n## ", 1)[0]
    listed = [line for block in re.findall(r"^```\n(.*?)^```$", errors, re.M | re.S) for line in block.splitlines()]
    documented = [m for text in [METHODS_INTRO, *METHOD_SECTIONS.values()] for _, m in _documented_errors(text)]
    samples = [re.sub(r"<[^>]+>", "X", message) for message in documented] + listed
    undocumented = [p.pattern for p, _ in RAISED if not any(p.fullmatch(sample) for sample in samples)]
    assert undocumented == []


# --- argument tables -------------------------------------------------------------

# How the docs write a params type: msgpack's names (§ "Types" at the top), nil for None.
_DOC_TYPES = {
    "str": "str",
    "str | None": "str|nil",
    "bool": "bool",
    "int | None": "int|nil",
    # A float argument takes an integer too.
    "float | None": "int|float|nil",
    "list[str] | None": "[str]|nil",
    "list[McpServerSpec]": "array",
}


def _type_name(kind: Any) -> str:
    """A type as its annotation writes it: `str | None`, `list[str]`."""
    if kind is type(None):
        return "None"
    if typing.get_origin(kind) is list:
        return f"list[{', '.join(_type_name(a) for a in typing.get_args(kind))}]"
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(kind))
    return str(getattr(kind, "__name__", kind)) if typing.get_origin(kind) is None else str(kind)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_argument_row_gives_its_type_whether_required_and_its_default(name: str) -> None:
    rows = {
        field: (kind.replace("\\", ""), required, default)
        for field, kind, required, default in re.findall(
            r"^\| `([a-z_]+)` \| ([^|]*(?:\\\|[^|]*)*) \| (yes|no) \| (.*?) ?\|$", METHOD_SECTIONS[name], re.M
        )
    }
    for field in attrs.fields(METHODS.method(name).params_type):
        assert field.name in rows, f"{name}: no argument row for {field.name}"
        kind, required, default = rows[field.name]
        real = _type_name(typing.get_type_hints(METHODS.method(name).params_type)[field.name])
        assert kind == _DOC_TYPES[real], f"{name}.{field.name}: documented as {kind}, is {real}"
        assert required == ("yes" if field.default is attrs.NOTHING else "no"), f"{name}.{field.name}: required?"
        if field.default is not attrs.NOTHING:
            shown = {None: "nil", False: "false"}[field.default]
            assert default.strip("`").startswith(shown), f"{name}.{field.name}: default is {shown}, not {default}"


def test_the_methods_answered_by_the_reader_are_those_that_never_wait() -> None:
    listed = DOC.split("Methods that never wait (", 1)[1].split(") are answered", 1)[0]
    assert set(re.findall(r"`([a-z_.]+)`", listed)) == {n for n in METHODS.names() if METHODS.method(n).immediate}


# --- the examples on the wire ----------------------------------------------------


def _wire_examples() -> list[Any]:
    """Every `→ [...]` / `← [...]` message of the doc's examples, decoded from its JSON."""
    messages = []
    for block in _code_blocks(""):
        for text in re.split(r"^[→←] ", block, flags=re.M)[1:]:
            messages.append(json.loads(text))
    return messages


def _code_blocks(language: str) -> list[str]:
    """The doc's fenced blocks marked `language` ("" for none), read fence by fence."""
    blocks: list[str] = []
    current: list[str] = []
    opened: str | None = None
    for line in DOC.splitlines():
        if line.startswith("```"):
            if opened is None:
                opened, current = line[3:].strip(), []
            else:
                if opened == language:
                    blocks.append("\n".join(current) + "\n")
                opened = None
        elif opened is not None:
            current.append(line)
    return blocks


WIRE_EXAMPLES = _wire_examples()


def _shape_problems(value: Any, kind: Any, where: str) -> list[str]:
    """Where `value` does not have the fields of `kind` (an attrs class, a list of one, or anything else)."""
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return [p for i, v in enumerate(value) for p in _shape_problems(v, item, f"{where}[{i}]")]
    if not (isinstance(kind, type) and attrs.has(kind)):
        return []
    if set(value) != {f.name for f in attrs.fields(kind)}:
        return [f"{where}: {sorted(value)} is not a {kind.__name__} {sorted(f.name for f in attrs.fields(kind))}"]
    hints = typing.get_type_hints(kind)
    return [p for name, v in value.items() for p in _shape_problems(v, hints[name], f"{where}.{name}")]


def test_there_are_wire_examples_of_requests_replies_and_events() -> None:
    assert {message[0] for message in WIRE_EXAMPLES} == {0, 1, 2}


def test_every_wire_example_has_the_fields_of_its_type() -> None:
    from agentd.protocol import EventEnvelope

    problems = []
    methods: dict[int, str] = {}
    for message in WIRE_EXAMPLES:
        if message[0] == 0:
            _, msgid, name, params = message
            methods[msgid] = name
            fields = {f.name for f in attrs.fields(METHODS.method(name).params_type)}
            problems += [f"{name} params: {sorted(p)}" for p in params if not set(p) <= fields]
        elif message[0] == 1 and message[2] is None:
            name = methods[message[1]]
            problems += _shape_problems(message[3], METHODS.method(name).result_type, f"{name} reply")
        elif message[0] == 2:
            (envelope,) = message[2]
            problems += _shape_problems({**envelope, "payload": {}}, EventEnvelope, "event")
            kind = envelope["type"]
            if set(envelope["payload"]) not in _payload_fields(kind):
                problems.append(f"{kind} payload: {sorted(envelope['payload'])}")
    assert problems == []


@pytest.mark.parametrize("name", METHODS.names())
def test_a_methods_json_result_example_has_the_fields_of_its_reply(name: str) -> None:
    section = METHOD_SECTIONS[name]
    for example in re.findall(r"^```json\n(.*?)^```$", section, re.M | re.S):
        assert _shape_problems(json.loads(example), METHODS.method(name).result_type, name) == []


def test_every_link_within_the_doc_names_a_heading() -> None:
    slugs: dict[str, int] = {}
    anchors = set()
    for title in re.findall(r"^#{1,6} (.+)$", DOC, re.M):
        # GitHub's anchors: lower case, punctuation dropped but for - and _, spaces as -, repeats numbered.
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        anchors.add(slug if slug not in slugs else f"{slug}-{slugs[slug]}")
        slugs[slug] = slugs.get(slug, 0) + 1
    links = set(re.findall(r"\]\(#([^)]+)\)", DOC))
    assert links - anchors == set()


def _nested_fields(kind: Any) -> set[str]:
    """The field names of `kind` and of every attrs type inside it."""
    if typing.get_origin(kind) in (list, typing.Union) or type(kind).__name__ == "UnionType":
        return {name for arg in typing.get_args(kind) for name in _nested_fields(arg)}
    if not (isinstance(kind, type) and attrs.has(kind)):
        return set()
    hints = typing.get_type_hints(kind)
    return {f.name for f in attrs.fields(kind)} | {n for f in attrs.fields(kind) for n in _nested_fields(hints[f.name])}


@pytest.mark.parametrize("name", METHODS.names())
def test_no_reply_table_documents_a_field_the_reply_does_not_have(name: str) -> None:
    section = METHOD_SECTIONS[name]
    if "Result" not in section:
        return
    replied = _table_fields(section.split("Result", 1)[1].split("Errors", 1)[0])
    assert replied - _nested_fields(METHODS.method(name).result_type) == set()


@pytest.mark.parametrize("record", ["Workspace", "Session", "Message", "RunComplete", "QueuedPrompt"])
def test_each_record_table_documents_exactly_its_fields(record: str) -> None:
    import agentd.protocol

    kind = getattr(agentd.protocol, record)
    assert _table_fields(METHOD_SECTIONS[record]) == {f.name for f in attrs.fields(kind)}


def _publishing(node: ast.Call) -> bool:
    """A call that publishes an event: `broker.publish(...)`, `publish_must_deliver(...)`, `Event(...)`."""
    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    return name in {"publish", "publish_must_deliver", "Event"}


def test_every_payload_is_built_from_its_events_payload_type_where_it_is_published() -> None:
    # `publish(events.X, unstructure(Type(...)))`: the type is one the table gives X,
    # and no payload is a map written out by hand. (One passed as a variable is
    # checked on a real daemon's events, above.)
    built, by_hand = [], []
    for path in (Path(__file__).parent.parent / "agentd").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and _publishing(node)):
                continue
            for kind, payload in itertools.pairwise(node.args):
                if not (
                    isinstance(kind, ast.Attribute) and isinstance(kind.value, ast.Name) and kind.value.id == "events"
                ):
                    continue
                where = f"{path.name}:{node.lineno}"
                if not (isinstance(payload, ast.Call) and ast.unparse(payload.func).endswith("unstructure")):
                    by_hand.append(where)
                    continue
                inner = payload.args[0]
                if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name):
                    built.append((where, getattr(event_types, kind.attr), inner.func.id))
    assert by_hand == []
    assert {kind for _, kind, _ in built} >= {event_types.RUN_RETRY, event_types.EVENTS_GAP}
    wrong = [
        (where, kind, made) for where, kind, made in built if made not in {c.__name__ for c in EVENT_PAYLOADS[kind]}
    ]
    assert wrong == []


# How the docs write a field's scalar type; other types (maps, arrays, records) are described in words.
_SCALAR_DOC_TYPES = {
    "str": "str",
    "str | None": "str|nil",
    "int": "int",
    "bool": "bool",
    "float": "float",
    "float | None": "float|nil",
}


def _scalar_name(kind: Any) -> str:
    if typing.get_origin(kind) is typing.Literal:
        return "str"  # ToolStatus, PermissionOutcome: one of some strings
    return _type_name(kind)


def _typed_rows(text: str) -> dict[str, str]:
    """`field: type` of each `| `field` | type | description |` row."""
    rows = re.findall(r"^\| `([a-z_]+)` \| ((?:[^|\\]|\\\|)+?) \| [^|]", text, re.M)
    return {field: kind.replace("\\", "") for field, kind in rows}


def _type_problems(kind: type, text: str, where: str) -> list[str]:
    hints = typing.get_type_hints(kind)
    rows = _typed_rows(text)
    problems = []
    for field in attrs.fields(kind):
        expected = _SCALAR_DOC_TYPES.get(_scalar_name(hints[field.name]))
        if expected is not None and field.name in rows and rows[field.name] != expected:
            problems.append(f"{where}.{field.name}: documented as {rows[field.name]}, is {expected}")
    return problems


def test_every_scalar_field_is_documented_with_its_type() -> None:
    import agentd.protocol

    problems = []
    for record in ("Workspace", "Session", "Message", "RunComplete", "QueuedPrompt"):
        problems += _type_problems(getattr(agentd.protocol, record), METHOD_SECTIONS[record], record)
    for kind, section in PAYLOAD_SECTIONS.items():
        for payload in EVENT_PAYLOADS[kind]:
            problems += _type_problems(payload, section, kind)
    for name in METHODS.names():
        reply = _attrs_class(METHODS.method(name).result_type)
        section = METHOD_SECTIONS[name]
        if reply is not None and "Result" in section:
            problems += _type_problems(reply, section.split("Result", 1)[1], name)
    assert problems == []


# --- §5.3 on a real daemon -------------------------------------------------------

_TOOL_TURN = {"steps": [{"tool_calls": [{"name": "ls", "arguments": {"path": "."}}]}, {"chunks": ["x"]}]}


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            {"chunks": ["a", "b"]},
            ["session.updated", "message.created", "run.started", "message.created"]
            + ["message.delta", "message.delta", "message.updated", "run.complete", "session.updated"],
        ),
        (
            _TOOL_TURN,
            ["session.updated", "message.created", "run.started", "message.created", "message.updated"]
            + ["tool.started", "tool.finished", "message.created", "message.created"]
            + ["message.delta", "message.updated", "run.complete", "session.updated"],
        ),
        (
            {"chunks": ["a"], "error": "boom"},
            ["session.updated", "message.created", "run.started", "message.created"]
            + ["message.delta", "message.updated", "run.complete", "agent.error", "session.updated"],
        ),
    ],
    ids=["plain", "tool_calls", "model_fails"],
)
async def test_a_runs_events_come_in_the_order_section_5_3_gives(
    ws: Workspace, script: dict[str, Any], expected: list[str]
) -> None:
    session = await ws.new_session("titled")
    await ws.send(session, script)
    await ws.events.until(lambda e: e["type"] == "session.updated" and not e["payload"]["busy"])
    assert [e["type"] for e in ws.events.seen if e["type"] != "session.created"] == expected


def test_the_doc_names_the_version_and_protocol_it_describes() -> None:
    import agentd

    intro = DOC.replace("\n", " ")
    assert f"implemented by agentd {agentd.__version__}." in intro
    assert f"`initialize` reports protocol version `{agentd.PROTOCOL_VERSION}`." in intro
