"""A tool's parameters class is its JSON Schema and its argument checks, both made here.

A params class is a frozen attrs class whose fields are `str`, `int`, `float`,
`bool`, `list[str]` or one of those `| None`; each field says what it is for in
`metadata={"description": ...}` and may bound a number with "minimum",
"maximum" or "exclusiveMinimum". The schema the model is shown, the checks its
arguments pass and the reference in docs/protocol.md §12 all come from those
fields, so they cannot disagree.
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any

import attrs

from agentd.errors import InvalidRequest
from agentd.protocol._convert import structure_params

from ._base import ToolError, ToolSpec

__all__ = ["BOUNDS", "json_schema", "parse_arguments"]

_SCALARS: dict[object, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
# The numeric bounds a field may carry in its metadata, as JSON Schema names them.
BOUNDS = ("minimum", "maximum", "exclusiveMinimum")


def _field_schema(cls: type, field: attrs.Attribute[Any]) -> dict[str, Any]:
    where = f"{cls.__name__}.{field.name}"
    tp = field.type
    nullable = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(args) != 1 or len(typing.get_args(tp)) != 2:
            raise TypeError(f"{where}: only `X | None` unions have a schema here, not {tp!r}")
        (tp,) = args
        nullable = True
    if tp in _SCALARS:
        schema: dict[str, Any] = {"type": _SCALARS[tp]}
    elif typing.get_origin(tp) is list and typing.get_args(tp) == (str,):
        schema = {"type": "array", "items": {"type": "string"}}
    else:
        raise TypeError(f"{where}: type {tp!r} has no JSON Schema here")
    if nullable:
        schema["type"] = [schema["type"], "null"]
    description = field.metadata.get("description")
    if not description:
        raise TypeError(f"{where}: no description in the field's metadata")
    schema["description"] = description
    for bound in BOUNDS:
        if bound in field.metadata:
            schema[bound] = field.metadata[bound]
    default = field.default
    if default is not attrs.NOTHING and not isinstance(default, attrs.Factory) and default is not None:  # type: ignore[arg-type]
        schema["default"] = default
    return schema


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema (a draft 2020-12 subset) of a params class."""
    attrs.resolve_types(cls)
    fields = attrs.fields(cls)
    return {
        "type": "object",
        "properties": {field.name: _field_schema(cls, field) for field in fields},
        "required": [field.name for field in fields if field.default is attrs.NOTHING],
        "additionalProperties": False,
    }


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have.
    raise ValueError(f"{name} is not a JSON value")


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _reword(problem: str) -> str:
    """The converter's "expected X @ params.field" in the words of a tool call."""
    found = re.fullmatch(r"(.*) @ params(?:\.(.+))?", problem)
    if found is None:
        return problem
    message, field = found[1].replace("got nil", "got null"), found[2]
    extra = re.fullmatch(r"extra fields found \((.*)\)", message)
    if extra is not None:
        return f"unknown field(s): {extra[1]}"
    if message == "required field missing":
        return f"missing required field {field}"
    return f"{field}: {message}" if field else message


def _check_bounds(cls: type, params: object) -> None:
    for field in attrs.fields(cls):
        value = getattr(params, field.name)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        meta = field.metadata
        if "minimum" in meta and value < meta["minimum"]:
            raise ToolError(f"{field.name} must be at least {meta['minimum']}, got {value}")
        if "exclusiveMinimum" in meta and value <= meta["exclusiveMinimum"]:
            raise ToolError(f"{field.name} must be more than {meta['exclusiveMinimum']}, got {value}")
        if "maximum" in meta and value > meta["maximum"]:
            raise ToolError(f"{field.name} must be at most {meta['maximum']}, got {value}")


def parse_arguments(spec: ToolSpec, arguments: str) -> Any:
    """The model's JSON arguments as an instance of the tool's params class.

    Empty text is `{}`: some models send nothing for a call without arguments.
    Raises ToolError naming what was wrong.
    """
    text = arguments.strip()
    raw: object = {}
    if text:
        try:
            raw = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise ToolError(f"{spec.name}: the arguments are not JSON ({exc})") from None
    if type(raw) is not dict:
        raise ToolError(f"{spec.name}: the arguments must be a JSON object, got {_json_kind(raw)}")
    if spec.schema is not None:
        # Its own schema: the tool's server checks the arguments against it, and says what is wrong.
        return raw
    try:
        params: Any = structure_params([raw], spec.params)
    except InvalidRequest as exc:
        problems = "; ".join(_reword(problem) for problem in str(exc).split("; "))
        raise ToolError(f"{spec.name}: bad arguments: {problems}") from None
    try:
        _check_bounds(spec.params, params)
    except ToolError as exc:
        raise ToolError(f"{spec.name}: bad arguments: {exc}") from None
    return params
