"""The tool table, its JSON Schemas, docs/protocol.md §12, argument checks and how a call's failures surface."""

from __future__ import annotations

import logging
import re
import threading
import types
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from support import WAIT
from tools_support import context

from agentd.models import ToolDefinition
from agentd.tools import (
    TOOLS,
    ToolContext,
    ToolError,
    ToolOutput,
    ToolSpec,
    _threads,
    definitions,
    parse_arguments,
    run_tool,
)
from agentd.tools._schema import json_schema

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
TOOLS_DOC = DOC.split("\n## 12. Tools\n", 1)[1]
SECTIONS = dict((m[1], m[2]) for m in re.finditer(r"^### 12\.\d+ ([a-z_]+)\n(.*?)(?=^### |\Z)", TOOLS_DOC, re.M | re.S))
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def test_the_table_has_every_tool_with_its_kind() -> None:
    assert list(TOOLS) == ["view", "ls", "glob", "grep", "write", "edit", "bash"]
    assert {name: spec.kind for name, spec in TOOLS.items()} == {
        "view": "read",
        "ls": "read",
        "glob": "read",
        "grep": "read",
        "write": "edit",
        "edit": "edit",
        "bash": "execute",
    }
    assert all(spec.name == name for name, spec in TOOLS.items())


def _expected_type(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return [_expected_type(inner), "null"]
    if typing.get_origin(tp) is list:
        return "array"
    return JSON_TYPES[tp]


@pytest.mark.parametrize("name", list(TOOLS))
def test_each_definition_is_the_schema_of_its_params_class(name: str) -> None:
    spec = TOOLS[name]
    (definition,) = [d for d in definitions() if d.name == name]
    assert definition == ToolDefinition(name, spec.description, json_schema(spec.params))
    schema = definition.parameters
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    fields = attrs.fields(attrs.resolve_types(spec.params))
    assert list(schema["properties"]) == [f.name for f in fields]
    assert schema["required"] == [f.name for f in fields if f.default is attrs.NOTHING]
    for field in fields:
        prop = schema["properties"][field.name]
        assert prop["type"] == _expected_type(field.type), field.name
        assert prop["description"] == field.metadata["description"]
        if field.default not in (attrs.NOTHING, None):
            assert prop["default"] == field.default


def test_definitions_are_in_table_order() -> None:
    assert [d.name for d in definitions()] == list(TOOLS)


@pytest.mark.parametrize("name", list(TOOLS))
def test_every_tool_and_parameter_is_documented(name: str) -> None:
    assert re.search(rf"^\| `{name}` \| {TOOLS[name].kind} \|", TOOLS_DOC, re.M), f"§12's table lacks {name}"
    assert name in SECTIONS, f"docs/protocol.md has no '### 12.N {name}' section"
    documented = re.findall(r"^\| `(\w+)` \|", SECTIONS[name], re.M)
    assert documented == [f.name for f in attrs.fields(TOOLS[name].params)]


def test_no_section_documents_a_tool_there_is_not() -> None:
    assert set(SECTIONS) - set(TOOLS) == set()


def test_a_params_class_without_descriptions_or_with_other_types_has_no_schema() -> None:
    @attrs.frozen
    class Undocumented:
        path: str

    @attrs.frozen
    class Mapping:
        values: dict[str, int] = attrs.field(metadata={"description": "x"})

    with pytest.raises(TypeError, match=r"Undocumented.path: no description"):
        json_schema(Undocumented)
    with pytest.raises(TypeError, match=r"Mapping.values: type .* has no JSON Schema"):
        json_schema(Mapping)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("view", "{path: 1}", "view: the arguments are not JSON (Expecting property name"),
        ("view", '["a"]', "view: the arguments must be a JSON object, got an array"),
        ("view", '"a"', "view: the arguments must be a JSON object, got a string"),
        ("view", "{}", "view: bad arguments: missing required field path"),
        ("view", '{"path": "a", "colour": 1}', "view: bad arguments: unknown field(s): colour"),
        ("view", '{"path": 7}', "view: bad arguments: path: expected a string, got int"),
        ("view", '{"path": null}', "view: bad arguments: path: expected a string, got null"),
        ("view", '{"path": "a", "offset": "3"}', "view: bad arguments: offset: expected an integer, got str"),
        ("view", '{"path": "a", "offset": true}', "view: bad arguments: offset: expected an integer, got bool"),
        ("view", '{"path": "a", "offset": 0}', "view: bad arguments: offset must be at least 1, got 0"),
        ("view", '{"path": "a", "limit": 0}', "view: bad arguments: limit must be at least 1, got 0"),
        (
            "edit",
            '{"path": "a", "old_string": "x", "new_string": "y", "replace_all": 1}',
            "edit: bad arguments: replace_all: expected a boolean, got int",
        ),
        ("bash", '{"command": "true", "timeout": NaN}', "bash: the arguments are not JSON (NaN is not a JSON value"),
        ("bash", '{"command": "true", "timeout": -1}', "bash: bad arguments: timeout must be more than 0, got -1"),
    ],
)
def test_bad_arguments_are_named(name: str, text: str, message: str) -> None:
    with pytest.raises(ToolError) as info:
        parse_arguments(TOOLS[name], text)
    assert str(info.value).startswith(message), str(info.value)


def test_good_arguments_become_the_params_class() -> None:
    params = parse_arguments(TOOLS["bash"], '{"command": "ls", "timeout": 5}')
    assert params == TOOLS["bash"].params("ls", 5.0)
    assert parse_arguments(TOOLS["ls"], "  ") == TOOLS["ls"].params()
    assert TOOLS["bash"].subject(params) == "ls"
    assert TOOLS["bash"].describe(params) == "bash: ls"
    assert TOOLS["view"].describe(parse_arguments(TOOLS["view"], '{"path": "a.py"}')) == "view a.py"


@attrs.frozen
class NoParams:
    pass


def spec_running(run: Any) -> ToolSpec:
    return ToolSpec("probe", "a tool for this test", NoParams, "read", run, lambda _p: "probe")


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return context(str(tmp_path))


async def test_an_unexpected_failure_is_an_internal_tool_error_and_logged(
    ctx: ToolContext, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(_ctx: ToolContext, _params: Any) -> ToolOutput:
        raise KeyError("surprise")

    with caplog.at_level(logging.ERROR), pytest.raises(ToolError) as info:
        await run_tool(spec_running(broken), ctx, NoParams())
    assert str(info.value) == "internal error in tool probe: KeyError: 'surprise'"
    assert "tool probe failed" in caplog.text and "KeyError" in caplog.text


async def test_a_tool_error_from_inside_a_nursery_is_the_tool_error(ctx: ToolContext) -> None:
    async def nested(_ctx: ToolContext, _params: Any) -> ToolOutput:
        async def fail() -> None:
            raise ToolError("the real reason")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)
        raise AssertionError("unreachable")

    with pytest.raises(ToolError) as info:
        await run_tool(spec_running(nested), ctx, NoParams())
    assert str(info.value) == "the real reason"


async def test_cancellation_and_base_exceptions_pass_through(ctx: ToolContext) -> None:
    async def forever(_ctx: ToolContext, _params: Any) -> ToolOutput:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def interrupted(_ctx: ToolContext, _params: Any) -> ToolOutput:
        raise KeyboardInterrupt

    with trio.move_on_after(0.05) as scope:
        await run_tool(spec_running(forever), ctx, NoParams())
    assert scope.cancelled_caught
    with pytest.raises(KeyboardInterrupt):
        await run_tool(spec_running(interrupted), ctx, NoParams())


async def test_tool_threads_are_bounded() -> None:
    release = threading.Event()
    total = _threads.MAX_TOOL_THREADS + 4
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            try:
                for _ in range(total):
                    nursery.start_soon(_threads.run_sync, release.wait)
                limiter = _threads._threads()
                while limiter.statistics().tasks_waiting < total - _threads.MAX_TOOL_THREADS:
                    await trio.sleep(0.01)
                assert limiter.borrowed_tokens == _threads.MAX_TOOL_THREADS
            finally:
                # The threads cannot be cancelled: let them end, whatever happened.
                release.set()
