"""The one converter between wire types and msgpack-ready maps, strict both ways.

cattrs coerces by default (`None` becomes `'None'` for a `str`, `"1"` becomes `1`);
a client that sends the wrong type must hear about it, so every primitive gets a
hook that only accepts its own type, and structuring errors are rewritten into
one message naming each bad field.
"""

from __future__ import annotations

from typing import Any, TypeVar

import cattrs
from cattrs.cols import is_sequence, list_structure_factory
from cattrs.v import format_exception

from agentd.errors import InvalidRequest

__all__ = ["converter", "structure_params", "unstructure"]

T = TypeVar("T")

converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def _strict(expected: type, name: str) -> Any:
    def hook(value: object, _type: object) -> object:
        # bool is an int subclass; a flag is not a count.
        if type(value) is not expected and not (
            expected is not bool and isinstance(value, expected) and type(value) is not bool
        ):
            raise _WrongType(f"expected {name}, got {_describe(value)}")
        return value

    return hook


def _structure_float(value: object, _type: object) -> float:
    if type(value) is int:
        return float(value)
    if type(value) is float:
        # NaN compares false with everything: no bound check downstream would catch it.
        if value != value:
            raise _WrongType("expected a number, got NaN")
        return value
    raise _WrongType(f"expected a number, got {_describe(value)}")


class _WrongType(TypeError):
    pass


def _format_error(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, _WrongType):
        return str(exc)
    return format_exception(exc, type_)


def _describe(value: object) -> str:
    if value is None:
        return "nil"
    return type(value).__name__


def _strict_list(type_: Any, conv: cattrs.Converter) -> Any:
    # cattrs would happily iterate a string into a list of characters.
    inner = list_structure_factory(type_, conv)

    def hook(value: object, t: object) -> object:
        if type(value) is not list:
            raise _WrongType(f"expected an array, got {_describe(value)}")
        return inner(value, t)

    return hook


converter.register_structure_hook_factory(is_sequence, _strict_list)
converter.register_structure_hook(str, _strict(str, "a string"))
converter.register_structure_hook(int, _strict(int, "an integer"))
converter.register_structure_hook(bool, _strict(bool, "a boolean"))
converter.register_structure_hook(float, _structure_float)


_NO_DEFAULT = object()
# Per params type: its value when called with no arguments at all (`[]`), or
# _NO_DEFAULT when it has required fields. Frozen, so one instance serves all.
_defaults: dict[type, object] = {}


def structure_params(params: object, cls: type[T]) -> T:
    """Validate a request's params array (`[]` or `[{...}]`) into `cls`.

    Raises InvalidRequest whose message names every offending field.
    """
    if type(params) is list and not params:
        default = _defaults.get(cls)
        if default is None:
            try:
                default = _defaults[cls] = converter.structure({}, cls)
            except Exception:
                default = _defaults[cls] = _NO_DEFAULT
        if default is not _NO_DEFAULT:
            return default  # type: ignore[return-value]
    if type(params) is not list or len(params) > 1:
        raise InvalidRequest("params must be an array holding at most one map of named arguments")
    fields: object = params[0] if params else {}
    if type(fields) is not dict:
        raise InvalidRequest(f"params[0] must be a map of named arguments, got {_describe(fields)}")
    for key in fields:
        if type(key) is not str:
            shown = repr(key)
            if len(shown) > 60:  # the client's bytes, echoed back: bounded
                shown = shown[:57] + "..."
            raise InvalidRequest(f"params[0] keys must be strings, got {_describe(key)} {shown}")
    try:
        return converter.structure(fields, cls)
    except Exception as exc:
        errors = cattrs.transform_error(exc, path="params", format_exception=_format_error)
        raise InvalidRequest("; ".join(errors)) from None


def unstructure(obj: object) -> Any:
    return converter.unstructure(obj)
