"""The one converter between wire types and msgpack-ready maps, strict both ways.

cattrs coerces by default (`None` becomes `'None'` for a `str`, `"1"` becomes `1`);
a client that sends the wrong type must hear about it, so every primitive gets a
hook that only accepts its own type, and structuring errors are rewritten into
one message naming each bad field.
"""

from __future__ import annotations

from typing import Any, TypeVar, get_args

import attrs
import cattrs
from cattrs.cols import is_mapping, is_sequence
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn
from cattrs.v import format_exception

from agentd.errors import InvalidRequest
from agentd.rpc import clip

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


# A key or value of the client's, quoted in an error: enough to recognise it by.
_QUOTED = 60
# Errors one message lists: a list of a million wrong elements is one mistake, not a million.
_MAX_ERRORS = 10
# One error's text: its path holds the client's map keys.
_MAX_ERROR = 300


def _format_error(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, _WrongType):
        return str(exc)
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        extra = sorted(exc.extra_fields)
        shown = ", ".join(_quoted(key) for key in extra[:_MAX_ERRORS])
        more = f" and {len(extra) - _MAX_ERRORS} more" if len(extra) > _MAX_ERRORS else ""
        return f"extra fields found ({shown}{more})"
    return format_exception(exc, type_)


def _quoted(text: str) -> str:
    """The client's bytes, echoed back: bounded."""
    return text if len(text) <= _QUOTED else text[: _QUOTED - 3] + "..."


def _describe(value: object) -> str:
    if value is None:
        return "nil"
    return type(value).__name__


def _strict_list(type_: Any, conv: cattrs.Converter) -> Any:
    # cattrs would happily iterate a string into a list of characters, and, for a list of a quarter
    # million wrong elements, build as many errors and their notes: 15 seconds with the event loop held.
    args = get_args(type_)
    item_type = args[0] if args else Any
    item = conv.get_structure_hook(item_type)

    def hook(value: object, t: object) -> object:
        if type(value) is not list:
            raise _WrongType(f"expected an array, got {_describe(value)}")
        out = []
        errors: list[Exception] = []
        for index, element in enumerate(value):
            try:
                out.append(item(element, item_type))
            except Exception as exc:
                if _enough(errors, exc, IterableValidationNote(f"Structuring {t} @ index {index}", index, item_type)):
                    break
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, type_)
        return out

    return hook


def _strict_map(type_: Any, conv: cattrs.Converter) -> Any:
    # cattrs would call `.items()` on whatever it is given, and name what it
    # lacks ("'str' object has no attribute 'items'") instead of what was wrong;
    # and, like a list's, check every one of a huge map's wrong values.
    args = get_args(type_)
    key_type, value_type = args if len(args) == 2 else (Any, Any)
    key_hook = conv.get_structure_hook(key_type)
    value_hook = conv.get_structure_hook(value_type)

    def hook(value: object, t: object) -> object:
        if type(value) is not dict:
            raise _WrongType(f"expected a map, got {_describe(value)}")
        out = {}
        errors: list[Exception] = []
        for key, element in value.items():
            try:
                out[key_hook(key, key_type)] = value_hook(element, value_type)
            except Exception as exc:
                if _enough(errors, exc, IterableValidationNote(f"Structuring mapping @ key {key!r}", key, value_type)):
                    break
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, type_)
        return out

    return hook


def _enough(errors: list[Exception], exc: Exception, note: IterableValidationNote) -> bool:
    """Add the error of one element to `errors`; True once there are as many as a reply lists (stop looking)."""
    errors.append(_noted(exc, note))
    if len(errors) == _MAX_ERRORS:
        errors.append(_MoreErrors(_MORE))
        return True
    return False


class _MoreErrors(_WrongType):
    """Where a list or map stopped being checked: its first errors are enough."""


_MORE = "(checked no further)"


def _noted(exc: Exception, note: IterableValidationNote) -> Exception:
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]
    return exc


def _strict_record(type_: Any, conv: cattrs.Converter) -> Any:
    # A record nested in params (a server spec in a list) gets the checks
    # `structure_params` gives the outer map: cattrs would read a string's
    # `.keys()`, and a non-string key breaks its own report of extra fields.
    inner = make_dict_structure_fn(type_, conv)

    def hook(value: object, t: object) -> object:
        if type(value) is not dict:
            raise _WrongType(f"expected a map, got {_describe(value)}")
        _check_keys(value, _WrongType)
        return inner(value, t)

    return hook


def _check_keys(value: dict[Any, Any], error: type[Exception]) -> None:
    for key in value:
        if type(key) is not str:
            raise error(f"keys must be strings, got {_describe(key)} {_quoted(repr(key))}")


converter.register_structure_hook_factory(is_sequence, _strict_list)
converter.register_structure_hook_factory(is_mapping, _strict_map)
converter.register_structure_hook_factory(attrs.has, _strict_record)
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
    try:
        _check_keys(fields, InvalidRequest)
    except InvalidRequest as exc:
        raise InvalidRequest(f"params[0] {exc}") from None
    try:
        return converter.structure(fields, cls)
    except Exception as exc:
        errors = cattrs.transform_error(exc, path="params", format_exception=_format_error)
        # A list or map checked no further than its first errors says so with a _MoreErrors.
        cut = [error for error in errors if error.startswith(_MORE)]
        errors = [error for error in errors if not error.startswith(_MORE)]
        if cut:
            more = ["and more"]
        else:
            more = [f"and {len(errors) - _MAX_ERRORS} more"] if len(errors) > _MAX_ERRORS else []
        raise InvalidRequest("; ".join([clip(error, _MAX_ERROR) for error in errors[:_MAX_ERRORS]] + more)) from None


def unstructure(obj: object) -> Any:
    return converter.unstructure(obj)
