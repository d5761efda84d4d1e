"""Protocol fuzzing on the real socket: junk msgpack values, every method with every field wrong, broken byte streams.

What is sent is a `Plan`: a few `Case`s on one fresh connection, and how the
connection ends (read the replies, half-close, or vanish). A case is a msgpack
value (a request, a notification, a response, an array of the wrong arity, any
value at all) or raw bytes (garbage, oversized array/map/str headers, nesting
deeper than the daemon decodes, too many values, a message over the size
limit); any case may be split at arbitrary bytes or cut short.

One generator makes them, over a `Source` of choices: `RandomSource` (a seeded
`random.Random`, for the soak's `drive_fuzz`) or Hypothesis' `draw` (the
strategies `values()`, `requests()`, `plans()`, which shrink). Both share the
method table, read from the daemon's own (`Methods`), so a new method is
fuzzed the day it is added.

What must hold (`run_plan` checks each connection, `drive_fuzz` also pings on
a connection of its own throughout): no reply carries code 0 (internal error)
or a message that reads like one (a traceback, "has no attribute"); a request
with a readable msgid is answered, with INVALID_PARAMS and exactly the message
the converter gives for params it refuses (which names each bad field); a
message that breaks the wire closes that connection, and only that one; ping
is answered within its bound; the daemon stays up. Leaks (fds, RSS,
server.status counts) are the caller's to compare, with `_health`.

It never opens a real directory (`workspace.open` is only given paths that do
not exist, under a directory of the driver's), never sends a `server.shutdown`
the daemon would obey, names no model but `echo` for a run that would start,
and gives session MCP servers only a program that does not exist or a URL on
the loopback discard port.
"""

from __future__ import annotations

import math
import os
import random
import socket
import string
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args, get_origin

import attrs
import msgpack
import trio

from agentctl.client import ConnectionLost, RpcError, open_client
from agentd.errors import InvalidRequest
from agentd.protocol import structure_params
from agentd.rpc import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_DEPTH,
    MAX_MSGID,
    MAX_VALUES,
    ErrorCode,
    ProtocolError,
    Refusal,
    RpcCodec,
    brief,
    clip,
)
from agentd.server._methods import ERROR_TEXT_LIMIT, Methods

from ._stats import Stats

__all__ = [
    "METHODS",
    "Case",
    "Context",
    "Plan",
    "RandomSource",
    "Stats",
    "drive_fuzz",
    "gen_plan",
    "plans",
    "requests",
    "run_plan",
    "values",
]

T = TypeVar("T")

# The daemon's own table: every method, with the attrs class its params structure into.
_TABLE = Methods(None)  # type: ignore[arg-type]  # the table only; nothing is called
METHODS: dict[str, type] = {name: _TABLE.method(name).params_type for name in _TABLE.names()}


def _resolve(annotation: Any) -> None:
    """Resolve the string annotations of every attrs class `annotation` reaches.

    Now, once: cattrs resolves a nested record's (a server spec's) when it first
    structures one, and a generator that read them as strings before and as types
    after would make different choices from the same seed.
    """
    if attrs.has(annotation):
        attrs.resolve_types(annotation)
        for field in attrs.fields(annotation):
            _resolve(field.type)
    for arg in get_args(annotation):
        _resolve(arg)


for _cls in METHODS.values():
    _resolve(_cls)

# Fields whose valid values are ids the daemon hands out: drawn from what the driver made (`Context.ids`).
_ID_FIELDS = ("workspace_id", "session_id", "run_id", "subscription_id", "request_id")
# Words in an error message that say the daemon failed, not that the request was wrong.
_UNCLEAR = (
    "Traceback",
    "internal error",
    "unknown error",
    "has no attribute",
    "object is not",
    "invalid value for type",
    "NoneType",
    "unhashable",
)
_CODES = {v for k, v in vars(ErrorCode).items() if k.isupper()} - {ErrorCode.INTERNAL}
# An error message longer than this is the client's bytes echoed back, not an explanation: the daemon
# clips at ERROR_TEXT_LIMIT, and says how much it left out.
_MAX_ERROR_TEXT = ERROR_TEXT_LIMIT + 50
# Integers msgpack encodes at the edges of its formats.
_EDGES: tuple[int, ...] = (0, 1, -1, 127, 128, 255, 256, -32, -33, -129, -32769, 65535, 65536)
_EDGES += (2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, -(2**63), 2**64 - 1)
# Headers that claim more than will ever come: 4 G-entry arrays and maps, 4 GB strings, binaries and exts.
_OVERSIZED = (
    b"\xdd\xff\xff\xff\xff",
    b"\xdf\xff\xff\xff\xff",
    b"\xdb\xff\xff\xff\xff",
    b"\xc6\xff\xff\xff\xff",
    b"\xc9\xff\xff\xff\xff\x01",
    b"\xdc\xff\xff",
    b"\xde\xff\xff",
    b"\xda\xff\xff",
    b"\xc5\xff\xff",
)


# --- where choices come from --------------------------------------------------------------------------------


class Source(Protocol):
    """The choices a generator makes: a seeded Random's, or Hypothesis' (which can then shrink them)."""

    def integer(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def text(self, max_size: int) -> str: ...

    def binary(self, max_size: int) -> bytes: ...

    def floating(self) -> float: ...


class RandomSource:
    """Choices from a seeded `random.Random`: the soak's, reproducible from its seed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        if self.rng.random() < 0.3:
            edges = [e for e in _EDGES if lo <= e <= hi]
            if edges:
                return self.rng.choice(edges)
        # Mostly small: big values are the edges' business.
        if hi - lo > 64 and self.rng.random() < 0.7:
            return self.rng.randint(lo, min(hi, lo + 64)) if lo >= 0 else self.rng.randint(max(lo, -64), min(hi, 64))
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def text(self, max_size: int) -> str:
        size = min(max_size, int(self.rng.expovariate(1 / 8)))
        alphabet = self.rng.choice(
            (
                string.ascii_letters + string.digits + "_-./",
                string.printable,
                "\x00\x01\x1b\n\r\t\x7f",
                None,  # any code point but a surrogate
            )
        )
        if alphabet is None:
            return "".join(chr(self._code_point()) for _ in range(size))
        return "".join(self.rng.choice(alphabet) for _ in range(size))

    def _code_point(self) -> int:
        while True:
            point = self.rng.choice(
                (self.rng.randint(0, 0x7FF), self.rng.randint(0, 0xFFFF), self.rng.randint(0, 0x10FFFF))
            )
            if not 0xD800 <= point <= 0xDFFF:
                return point

    def binary(self, max_size: int) -> bytes:
        return self.rng.randbytes(min(max_size, int(self.rng.expovariate(1 / 8))))

    def floating(self) -> float:
        special = (0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, 5e-324, -1.5, 2.0**63, 2.0**64)
        if self.rng.random() < 0.5:
            return self.rng.choice(special)
        return float(struct.unpack("<d", self.rng.randbytes(8))[0])


# --- placeholders: resolved when a case is sent, against what the driver made --------------------------------


@attrs.frozen
class Known:
    """A real id of this kind (`Context.ids`), the `index`th one there is; a made-up one while there are none."""

    kind: str
    index: int


@attrs.frozen
class Missing:
    """A path for `workspace.open` that does not exist, under the context's own directory; `name` goes in it."""

    name: str


class _MapKey(dict):  # type: ignore[type-arg]
    """A map used as a map key (msgpack allows it; a Python dict does not): hashable by identity."""

    __hash__ = object.__hash__  # type: ignore[assignment]


# --- values -------------------------------------------------------------------------------------------------


_SCALARS = ("nil", "bool", "int", "float", "str", "bytes", "ext")
_KINDS = (*_SCALARS, "list", "map")


def gen_text(src: Source, max_size: int = 40) -> str:
    """A string; now and then a long one, which an error message must not echo whole."""
    text = src.text(max_size)
    if text and src.choice((False,) * 9 + (True,)):
        return text * (src.integer(1000, 4000) // len(text) + 1)
    return text


def gen_value(src: Source, depth: int = 3, kinds: Sequence[str] = _KINDS) -> object:
    """Any msgpack value: nested lists and maps (with keys of every type) down to `depth` levels."""
    kind = src.choice(kinds if depth > 0 else [k for k in kinds if k in _SCALARS] or _SCALARS)
    if kind == "nil":
        return None
    if kind == "bool":
        return src.choice((False, True))
    if kind == "int":
        return src.integer(-(2**63), 2**64 - 1)
    if kind == "float":
        return src.floating()
    if kind == "str":
        return gen_text(src)
    if kind == "bytes":
        return src.binary(40)
    if kind == "ext":
        # Not -1, msgpack's timestamp (see the "timestamp" case): Python's msgpack packs only 0 to 127.
        return msgpack.ExtType(src.choice((1, 0, 127)), src.binary(8))
    if kind == "list":
        return [gen_value(src, depth - 1) for _ in range(src.integer(0, 4))]
    out: dict[Any, Any] = {}
    for _ in range(src.integer(0, 4)):
        out[gen_key(src, depth - 1)] = gen_value(src, depth - 1)
    return out


def gen_key(src: Source, depth: int) -> object:
    """A map key: a string mostly, else anything msgpack allows, arrays and maps included."""
    kind = src.choice(("str", "str", "int", "bytes", "nil", "bool", "float", "array", "map"))
    if kind == "str":
        return gen_text(src, 20)
    if kind == "array":
        return tuple(gen_value(src, 0) for _ in range(src.integer(0, 2)))
    if kind == "map":
        return _MapKey({src.text(4): gen_value(src, 0)})
    return gen_value(src, 0, (kind,))


# --- requests for every method --------------------------------------------------------------------------------


def _accepted(annotation: Any) -> set[type]:
    """The Python types a field of this annotation accepts at its top level."""
    if annotation is type(None) or annotation is None:
        return {type(None)}
    origin = get_origin(annotation)
    if origin is not None and get_args(annotation) and origin not in (list, dict, tuple):
        return set().union(*(_accepted(arg) for arg in get_args(annotation)))  # a union
    base = origin or annotation
    if base is float:
        return {int, float}
    if attrs.has(base) or base is dict:
        return {dict}
    return {base}


_KIND_TYPES = {
    "nil": type(None),
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "bytes": bytes,
    "ext": msgpack.ExtType,
    "list": list,
    "map": dict,
}


def gen_wrong(src: Source, annotation: Any) -> object:
    """A value of a type this field does not take."""
    accepted = _accepted(annotation)
    kinds = [k for k, t in _KIND_TYPES.items() if t not in accepted]
    return gen_value(src, 2, kinds)


def _inner(annotation: Any) -> Any:
    """`X` of `X | None`."""
    if get_origin(annotation) in (None, list, dict):
        return annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def gen_valid(src: Source, name: str, annotation: Any) -> object:
    """A value of the field's own type, as a client would send it (real ids, where the field is one)."""
    if name in _ID_FIELDS and src.choice((True, True, False)):
        return Known(name, src.integer(0, 3))
    if name == "path":
        return Missing(gen_text(src, 12))
    if name == "model":
        return src.choice(("echo", "nonexistent/model", "")) if src.choice((True, False)) else gen_text(src, 12)
    if name == "action":
        return src.choice(("allow", "deny", "allow_session", "deny_session", "maybe"))
    annotation = _inner(annotation)
    if type(None) in _accepted(annotation) and src.choice((False, False, True)):
        return None
    origin = get_origin(annotation) or annotation
    if origin is list:
        (item,) = get_args(annotation)
        return [gen_valid(src, name, item) for _ in range(src.integer(0, 3))]
    if origin is dict:
        return {src.text(8): src.text(8) for _ in range(src.integer(0, 2))}
    if attrs.has(origin):
        return gen_fields(src, origin)[0]
    if origin is bool:
        return src.choice((False, True))
    if origin is int:
        return src.integer(-(2**63), 2**64 - 1)
    if origin is float:
        return src.choice((src.floating(), src.integer(-5, 100)))
    return gen_text(src, 30)


def gen_fields(src: Source, cls: type) -> tuple[dict[Any, Any], tuple[str, ...]]:
    """A params map for `cls` and the fields made wrong in it.

    All valid (so the request gets past the converter, to the handler), one
    field wrong (whose name the error must give), or any of them wrong, left
    out, wrong inside (an element of a list, a value of a map), or an extra key.
    """
    fields: dict[Any, Any] = {}
    broken: list[str] = []
    names = [field.name for field in attrs.fields(cls)]
    mode = src.choice(("valid", "valid", "one", "one", "any"))
    target = src.choice(names) if mode == "one" and names else None
    for field in attrs.fields(cls):
        if mode == "valid" or (mode == "one" and field.name != target):
            how = src.choice(("valid", "valid", "omit")) if field.default is not attrs.NOTHING else "valid"
        elif mode == "one":
            how = src.choice(("wrong", "omit", "inside"))
        else:
            how = src.choice(("valid", "valid", "wrong", "omit", "inside"))
        if how == "omit":
            if field.default is attrs.NOTHING:
                broken.append(field.name)
            continue
        if how == "wrong":
            fields[field.name] = gen_wrong(src, field.type)
            broken.append(field.name)
            continue
        value = gen_valid(src, field.name, field.type)
        if how == "inside" and isinstance(value, list) and value:
            # One element wrong: a list of strings with a number in it, a server spec that is a string.
            (item,) = get_args(_inner(field.type))
            value[src.integer(0, len(value) - 1)] = gen_wrong(src, item)
            if src.choice((False,) * 9 + (True,)):
                value = value * (20_000 // len(value))  # thousands of wrong elements: refused as fast as one
            broken.append(field.name)
        elif how == "inside" and isinstance(value, dict) and value:
            key = src.choice(sorted(value, key=repr))
            value[key] = gen_wrong(src, str)
            broken.append(field.name)
        fields[field.name] = value
    if mode == "any" and src.choice((False, True)) or (mode == "one" and target is None):
        key = gen_key(src, 1)
        if key not in fields:
            fields[key] = gen_value(src, 1)
    return fields, tuple(broken)


def gen_params(src: Source, method: str) -> tuple[object, tuple[str, ...]]:
    """The params of a request for `method`: usually `[{fields}]`, else the wrong shape."""
    cls = METHODS.get(method) or src.choice([METHODS[name] for name in sorted(METHODS)])
    shape = src.choice(("fields",) * 6 + ("empty", "bare", "two", "junk"))
    if shape == "empty":
        return [], ()
    if shape == "junk":
        return gen_value(src, 2), ()
    fields, broken = gen_fields(src, cls)
    if shape == "bare":
        return fields, ()
    if shape == "two":
        return [fields, gen_value(src, 1)], ()
    return [fields], broken


def gen_method(src: Source) -> str | object:
    how = src.choice(("known",) * 8 + ("near", "junk"))
    if how == "known":
        return src.choice(sorted(METHODS))
    if how == "near":
        name = src.choice(sorted(METHODS))
        return src.choice((name.upper(), name + " ", name.replace(".", "/"), "", name[:-1], "." + name))
    return gen_value(src, 1)


def gen_msgid(src: Source) -> object:
    how = src.choice(("fresh",) * 8 + ("edge", "wrong"))
    if how == "fresh":
        return None  # the connection's next one (`_Connection.msgid`)
    if how == "edge":
        return src.choice((0, MAX_MSGID))
    return src.choice((-1, MAX_MSGID + 1, 2**64 - 1, -(2**63), "1", 1.0, True, [1], b"\x01"))


@attrs.frozen
class Case:
    """One thing a connection sends.

    `kind` "value" packs `value` (placeholders resolved); the other kinds are
    bytes made when the case is sent (`_render`), from `size` and `blob`.
    `cuts` splits what is sent at these fractions of its length; `truncate`
    sends only that fraction of it (and nothing after it on the connection).
    """

    kind: str
    value: object = None
    broken: tuple[str, ...] = ()
    size: int = 0
    blob: bytes = b""
    cuts: tuple[float, ...] = ()
    truncate: float | None = None


def gen_request(src: Source) -> Case:
    """`[0, msgid, method, params]` for some method, any field of it wrong or not."""
    method = gen_method(src)
    params, broken = gen_params(src, method if type(method) is str else "")
    return Case("value", [0, gen_msgid(src), method, params], broken)


def gen_case(src: Source) -> Case:
    shape = src.choice(
        ("request",) * 14
        + ("notification", "response", "arity", "kind", "value", "deep", "many", "header", "garbage", "timestamp")
        + ("burst",)
    )
    if shape == "request":
        case = gen_request(src)
    elif shape == "notification":
        method = gen_method(src)
        case = Case("value", [2, method, gen_params(src, method if type(method) is str else "")[0]])
    elif shape == "response":
        error = src.choice((None, [src.integer(-1, 9), src.text(20)], gen_value(src, 1)))
        case = Case("value", [1, gen_msgid(src), error, gen_value(src, 2)])
    elif shape == "arity":
        request = gen_request(src).value
        assert isinstance(request, list)
        case = Case("value", request[: src.integer(0, 3)] if src.choice((True, False)) else [*request, None])
    elif shape == "kind":
        kind = src.choice((3, -1, 2**32, "0", 0.0, False, None, [0], b"\x00"))
        case = Case("value", [kind, 1, "ping", []])
    elif shape == "value":
        case = Case("value", gen_value(src, 3))
    elif shape == "deep":
        case = Case("deep", size=src.integer(MAX_DEPTH - 3, 3000), blob=src.choice((b"\x91", b"\x81\xa1k")))
    elif shape == "many":
        case = Case("many", size=src.choice((MAX_VALUES - 4, MAX_VALUES + 1, 2 * MAX_VALUES)))
    elif shape == "header":
        case = Case("header", size=src.choice((0, 1)), blob=src.choice(_OVERSIZED) + src.binary(16))
    elif shape == "burst":
        # Pipelined past the daemon's in-flight bound (128): its reader pauses, and must resume.
        # Small replies only, so that not reading them until all are sent cannot fill the socket.
        method = src.choice(("ping", "ping", "server.status", "no.such.method"))
        params, broken = gen_params(src, method)
        case = Case("burst", [0, None, method, params], broken, size=src.integer(2, 300))
    elif shape == "timestamp":
        # msgpack's timestamp extension, of a length or with nanoseconds it refuses: breaks the stream.
        case = Case("timestamp", blob=src.binary(13))
    else:
        case = Case("garbage", blob=src.binary(64))
    how = src.choice(("whole", "whole", "whole", "split", "truncate"))
    if how == "split":
        case = attrs.evolve(case, cuts=tuple(sorted(src.integer(1, 99) / 100 for _ in range(src.integer(1, 5)))))
    elif how == "truncate":
        case = attrs.evolve(case, truncate=src.integer(0, 99) / 100)
    return case


@attrs.frozen
class Plan:
    """What one connection does: its cases in order, then `ending` ("read", "half" or "vanish")."""

    cases: tuple[Case, ...]
    ending: str


def gen_plan(src: Source) -> Plan:
    cases = tuple(gen_case(src) for _ in range(src.integer(1, 4)))
    return Plan(cases, src.choice(("read", "half", "half", "vanish")))


# --- Hypothesis' strategies, over the same generator ---------------------------------------------------------


class _DrawSource:
    """Choices drawn from Hypothesis strategies: what fails shrinks to a small example."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        from hypothesis import strategies as st

        self._draw = draw
        self._st = st

    def integer(self, lo: int, hi: int) -> int:
        return int(self._draw(self._st.integers(lo, hi)))

    def choice(self, options: Sequence[T]) -> T:
        # By index: it shrinks towards the first option, which the generators make the plainest.
        return options[self.integer(0, len(options) - 1)]

    def text(self, max_size: int) -> str:
        st = self._st
        return str(self._draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)))

    def binary(self, max_size: int) -> bytes:
        return bytes(self._draw(self._st.binary(max_size=max_size)))

    def floating(self) -> float:
        return float(self._draw(self._st.floats()))


def _strategy(generate: Callable[[Source], T]) -> Any:
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw: Callable[[Any], Any]) -> T:
        return generate(_DrawSource(draw))

    return strategy()


def values() -> Any:
    """Hypothesis: any msgpack value, with non-string keys and nesting."""
    return _strategy(gen_value)


def requests() -> Any:
    """Hypothesis: a request `Case` for any method (and for none), fields wrong or not."""
    return _strategy(gen_request)


def plans() -> Any:
    """Hypothesis: what one connection sends, and how it ends."""
    return _strategy(gen_plan)


# --- what a case becomes on the wire, and what the daemon owes it -----------------------------------------------


@attrs.frozen
class Expect:
    """What the daemon owes one case."""

    # A reply with this msgid (None: none).
    msgid: int | None = None
    # The code its error must have (None: any but 0, or a result).
    code: int | None = None
    # Its error message, exactly (the converter's, for params it refuses).
    message: str | None = None
    # Words its message must hold.
    words: tuple[str, ...] = ()
    # The message breaks the stream: the daemon must close the connection.
    closes: bool = False
    # Whether anything else on the connection may be answered at all (bytes that may or may not frame).
    anything: bool = False


@attrs.define
class Context:
    """What the driver made that fuzzed requests may name: real ids, and a directory of paths that do not exist."""

    missing: Path
    ids: dict[str, list[str]] = attrs.Factory(dict)

    def known(self, kind: str, index: int) -> str:
        pool = self.ids.get(kind) or [f"{kind.split('_')[0][:4]}_00000000"]
        return pool[index % len(pool)]

    def resolve(self, value: object) -> object:
        if type(value) is Known:
            return self.known(value.kind, value.index)
        if type(value) is Missing:
            return self.missing_path(value.name)
        if type(value) is list:
            return [self.resolve(v) for v in value]
        if type(value) is dict:
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def missing_path(self, name: str) -> str:
        # Anything that would not open (relative, empty, NUL, too long) as it is; anything else under `missing`.
        if not name.startswith("/") or "\x00" in name:
            return name
        return str(self.missing / ("m" + name.replace("/", "_")))


def _safe(method: object, params: object, ctx: Context) -> object:
    """`params`, changed where the daemon would do something outside the fuzzing's sandbox."""
    cls = METHODS.get(method) if type(method) is str else None
    if cls is None:
        return params
    try:
        structured: Any = structure_params(params, cls)
    except Exception:
        return params  # refused before it does anything
    assert type(params) is list
    fields: dict[str, Any] = dict(params[0]) if params else {}
    if method == "server.shutdown":
        return [{"if_idle": "never a boolean"}]
    if method == "workspace.open":
        # Relative, empty or with a NUL, it is refused before anything looks; else it must be one of ours.
        path = structured.path
        if os.path.isabs(path) and "\x00" not in path and os.path.dirname(path) != str(ctx.missing):
            fields["path"] = ctx.missing_path(path)
    if method == "agent.send" and structured.model in (None, "scripted"):
        fields["model"] = "echo"  # the scripted model would run what the prompt says
    if method == "session.mcp_servers":
        fields["servers"] = [
            {
                **spec,
                **(
                    {"command": [str(ctx.missing / "no-such-server"), *spec["command"][1:]]}
                    if spec.get("command")
                    else {}
                ),
                **({"url": "http://127.0.0.1:9/mcp"} if spec.get("url") is not None else {}),
            }
            for spec in fields.get("servers", [])
        ]
    return [fields]


def expect_for(data: bytes, broken: tuple[str, ...]) -> Expect:
    """What the daemon owes one message's bytes, by the protocol's rules (docs/protocol.md).

    Decoded by the daemon's own codec, guarded as it is: whatever the daemon
    refuses unread, or reads map keys as, is what this sees too.
    """
    codec = RpcCodec(guarded=True)
    codec.receive_data(data)
    try:
        decoded = codec.next_values()
    except ProtocolError:
        return Expect(closes=True)
    if len(decoded) != 1:
        return Expect(anything=True)  # unfinished, or more than one message
    value = decoded[0]
    if type(value) is Refusal:
        return Expect(value.msgid, ErrorCode.INVALID_PARAMS, value.message)
    if type(value) is not list or not value or type(value[0]) is not int:
        return Expect(closes=True)
    kind = value[0]
    msgid_ok = len(value) > 1 and type(value[1]) is int and 0 <= value[1] <= MAX_MSGID
    if kind == 0:
        if len(value) != 4 or not msgid_ok:
            return Expect(closes=True)
        msgid, method, params = value[1], value[2], value[3]
        if type(method) is not str:
            return Expect(msgid, ErrorCode.UNKNOWN_METHOD, words=("method must be a string",))
        cls = METHODS.get(method)
        if cls is None:
            return Expect(msgid, ErrorCode.UNKNOWN_METHOD, words=("unknown method",))
        if method == "ping" and params == []:
            return Expect(msgid)
        try:
            structure_params(params, cls)
        except InvalidRequest as exc:
            message = str(exc)
            keyed = "keys must be strings" in message or "params must be" in message or "params[0] must" in message
            return Expect(msgid, ErrorCode.INVALID_PARAMS, message, () if keyed else broken)
        except Exception as exc:
            # The converter itself failed: the daemon would answer this with code 0.
            return Expect(msgid, ErrorCode.INVALID_PARAMS, f"(the converter raised {brief(exc)})")
        return Expect(msgid)
    if kind == 1:
        return Expect(closes=len(value) != 4 or not msgid_ok)
    if kind == 2:
        return Expect(closes=len(value) != 3)
    return Expect(closes=True)


_packer = msgpack.Packer(use_bin_type=True)


def _pack_request_head(msgid: int, method: str) -> bytes:
    head: bytes = _packer.pack(msgid) + _packer.pack(method)
    return b"\x94\x00" + head


def render(case: Case, msgid: int, ctx: Context, used: set[int] | None = None) -> tuple[bytes, Expect, str]:
    """The bytes a case sends (before cuts), what the daemon owes them, and a line to show it by.

    `msgid` is the connection's next; a case's own (an edge one) is kept unless it is in `used`.
    """
    if case.kind == "value":
        value = ctx.resolve(case.value)
        kind = value[0] if type(value) is list and value and type(value[0]) is int else None
        if (
            type(value) is list
            and len(value) >= 2
            and kind in (0, 1)
            and (value[1] is None or (type(value[1]) is int and value[1] in (used or ())))
        ):
            value[1] = msgid
        if type(value) is list and len(value) == 4 and kind == 0:
            value[3] = _safe(value[2], value[3], ctx)
        data: bytes = _packer.pack(value)
        return data, expect_for(data, case.broken), brief(value)
    if case.kind == "deep":
        # Deeper than msgpack's own packer goes: packed by hand, as ping's params.
        data = _pack_request_head(msgid, "ping") + b"\x91" + case.blob * case.size + b"\x90"
        return data, expect_for(data, ()), f"ping with params nested {case.size} deep ({case.blob!r})"
    if case.kind == "many":
        data = _pack_request_head(msgid, "ping") + _packer.pack([[0] * case.size])
        return data, expect_for(data, ()), f"ping with {case.size} values"
    if case.kind == "timestamp":
        ext = b"\xc7" + bytes([len(case.blob)]) + b"\xff" + case.blob
        data = _pack_request_head(msgid, "ping") + b"\x91" + ext
        return data, expect_for(data, ()), f"ping with the timestamp {ext.hex()}"
    if case.kind == "huge":
        data = _pack_request_head(msgid, "ping") + _packer.pack([b"\x00" * case.size])
        return data, Expect(closes=True), f"ping with a {case.size}-byte binary"
    if case.kind == "header":
        prefix = _pack_request_head(msgid, "ping") if case.size else b""
        return prefix + case.blob, Expect(anything=True), f"oversized header {(prefix + case.blob).hex()}"
    return case.blob, Expect(anything=True), f"bytes {case.blob.hex()}"


def _expand(cases: Sequence[Case]) -> list[Case]:
    """The cases a connection sends: a burst is `size` requests, each a case of its own."""
    out: list[Case] = []
    for case in cases:
        if case.kind == "burst":
            out += [Case("value", case.value, case.broken)] * case.size
        else:
            out.append(case)
    return out


# --- one connection -------------------------------------------------------------------------------------------


def _error_problems(error: object, expect: Expect | None) -> list[str]:
    """What is wrong with a reply's error slot, against what was owed."""
    if error is None:
        if expect is not None and expect.code is not None:
            return [f"answered with a result, not the error code {expect.code} owed ({expect.message})"]
        return []
    if type(error) is not list or len(error) != 2 or type(error[0]) is not int or type(error[1]) is not str:
        return [f"an error slot that is not [code, message]: {brief(error)}"]
    code, message = error
    problems = []
    if code == ErrorCode.INTERNAL:
        problems.append(f"error code 0 (internal): {clip(message)}")
    elif code not in _CODES:
        problems.append(f"error code {code}, which is not one of the protocol's: {clip(message)}")
    problems += [
        f"an error that reads like a failure ({word!r}): {clip(message)}" for word in _UNCLEAR if word in message
    ]
    if len(message) > _MAX_ERROR_TEXT:
        problems.append(f"an error message of {len(message)} characters: {clip(message)}")
    if not message.strip():
        problems.append("an empty error message")
    if expect is not None:
        if expect.code is not None and code != expect.code:
            problems.append(f"error code {code}, owed {expect.code}: {clip(message)}")
        if expect.message is not None and message != expect.message:
            problems.append(f"error {clip(message)!r}, owed {clip(expect.message)!r}")
        problems += [
            f"an error that does not name {word!r}: {clip(message)}" for word in expect.words if word not in message
        ]
    return problems


class _Connection:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30)
        self.next_msgid = 1
        self.eof = False

    def msgid(self) -> int:
        self.next_msgid += 1
        return self.next_msgid

    async def send(self, data: bytes) -> bool:
        """False if the daemon has closed the connection."""
        view = memoryview(data)
        try:
            while view:
                view = view[await self.sock.send(view) :]
        except OSError:
            return False
        return True

    async def drain(self) -> None:
        """Take in what comes, for receive() to hand out later; run while sending.

        A burst of requests unread replies answer would otherwise fill our
        socket: the daemon's writes wait, it stops reading at its in-flight
        limit, and our sends wait too, both for ever.
        """
        while True:
            try:
                data = await self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            self.unpacker.feed(data)

    async def receive(self) -> Any:
        """The next message, or None at end of stream (or reset)."""
        while True:
            try:
                return next(self.unpacker)
            except StopIteration:
                pass
            try:
                data = await self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                self.eof = True
                return None
            self.unpacker.feed(data)


async def run_plan(
    socket_path: Path, plan: Plan, ctx: Context, *, reply_bound: float = 15.0
) -> tuple[list[str], Counter[str]]:
    """Carry out `plan` on a fresh connection; what went wrong (each a sentence) and what happened."""
    counts: Counter[str] = Counter()
    problems: list[str] = []
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    shown: list[str] = []

    def problem(text: str) -> None:
        problems.append(f"{text} [connection: {'; '.join(shown)}; ending {plan.ending}]")

    try:
        await sock.connect(os.fspath(socket_path))
        conn = _Connection(sock)
        owed: dict[int, Expect] = {}
        closes = False
        anything = False
        async with trio.open_nursery() as reading:
            reading.start_soon(conn.drain)
            for case in _expand(plan.cases):
                msgid = conn.msgid()
                data, expect, line = render(case, msgid, ctx, set(owed))
                counts[case.kind] += 1
                if case.truncate is not None:
                    data = data[: int(len(data) * case.truncate)]
                    expect = Expect(anything=True)
                shown.append(clip(line, 200) + (f" (first {len(data)} bytes)" if case.truncate is not None else ""))
                cuts = sorted({int(len(data) * cut) for cut in case.cuts} | {0, len(data)})
                for start, end in zip(cuts, cuts[1:], strict=False):
                    if not await conn.send(data[start:end]):
                        break
                    await trio.lowlevel.checkpoint()
                if expect.msgid is not None:
                    if expect.msgid in owed:
                        problem(f"fuzzer: msgid {expect.msgid} reused")
                    owed[expect.msgid] = expect
                closes = closes or expect.closes
                anything = anything or expect.anything
                if expect.closes or expect.anything or case.truncate is not None:
                    break  # what follows would be read as part of it, or not at all
            reading.cancel_scope.cancel()
        counts["owed"] += len(owed)
        if plan.ending == "vanish":
            return problems, counts
        if plan.ending == "half" or anything:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        answered: set[int] = set()
        with trio.move_on_after(reply_bound) as scope:
            while True:
                if not (closes or anything or plan.ending == "half") and answered >= set(owed):
                    break
                message = await conn.receive()
                if message is None:
                    break
                if type(message) is not list or not message:
                    problem(f"the daemon sent {brief(message)}")
                    continue
                if message[0] != 1:
                    continue  # events of a subscription a case made
                if len(message) != 4:
                    problem(f"a reply of the wrong shape: {brief(message)}")
                    continue
                msgid, error = message[1], message[2]
                owed_it = owed.get(msgid)
                if msgid in answered:
                    problem(f"msgid {msgid} answered twice: {brief(message)}")
                answered.add(msgid)
                counts["replies"] += 1
                if type(error) is list and error and type(error[0]) is int:
                    counts[f"code_{error[0]}"] += 1
                if owed_it is None and not anything:
                    problem(f"a reply to msgid {msgid}, which nothing asked: {brief(message)}")
                problems.extend(
                    f"{p} (msgid {msgid}) [connection: {'; '.join(shown)}]" for p in _error_problems(error, owed_it)
                )
        if scope.cancelled_caught:
            waiting = sorted(set(owed) - answered)
            problem(
                f"no reply within {reply_bound:g} s to msgid(s) {waiting}"
                if waiting
                else f"the connection still open {reply_bound:g} s after it was broken or half-closed"
            )
        elif not closes and not anything:
            missing = sorted(set(owed) - answered)
            if missing:
                problem(f"the daemon closed the connection with msgid(s) {missing} unanswered")
        if closes or plan.ending == "half":
            counts["closed_by_daemon"] += conn.eof
    except OSError as exc:
        problem(f"cannot talk to the daemon: {exc!r}")
    finally:
        sock.close()
    return problems, counts


# --- the soak's driver ----------------------------------------------------------------------------------------


def _repro(seed: int) -> str:
    return f"seed {seed}: AGENTD_STRESS_SEED={seed} pytest tests/test_fuzz_protocol.py -k seeded"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status and "\nState:\tX" not in status


async def make_context(client: Any, project: Path | None, missing: Path) -> Context:
    """Real ids for fuzzed requests to name: a workspace `client` holds open, sessions, a finished run."""
    ctx = Context(missing)
    if project is None:
        return ctx
    ws = await client.call("workspace.open", {"path": str(project)})
    ctx.ids["workspace_id"] = [ws["id"]]
    for title in ("fuzz a", "fuzz b"):
        await add_session(client, ctx, title)
    sub = await client.call("events.subscribe", {"workspace_id": ws["id"]})
    ctx.ids["subscription_id"] = [sub["subscription_id"]]
    return ctx


async def add_session(client: Any, ctx: Context, title: str) -> None:
    workspace_id = ctx.ids["workspace_id"][0]
    session = await client.call("session.create", {"workspace_id": workspace_id, "title": title})
    ctx.ids.setdefault("session_id", []).insert(0, session["id"])
    params = {"workspace_id": workspace_id, "session_id": session["id"], "prompt": "hello", "model": "echo"}
    sent = await client.call("agent.send", params)
    await client.call("run.wait", {"run_id": sent["run_id"], "timeout": 30.0})
    ctx.ids.setdefault("run_id", []).insert(0, sent["run_id"])
    for kind in ("session_id", "run_id"):
        del ctx.ids[kind][4:]


async def drive_fuzz(
    socket_path: Path,
    pid: int,
    seed: int,
    deadline: float,
    *,
    project: Path | None = None,
    workers: int = 2,
    ping_bound: float = 5.0,
    reply_bound: float = 15.0,
    huge: bool = False,
) -> Stats:
    """Fuzz the daemon at `socket_path` (process `pid`) until trio's clock reaches `deadline`.

    `workers` connections at a time each carry out seeded plans; a pinger on
    a connection of its own checks ping is answered within `ping_bound`
    throughout. With `project` (a directory the fuzzing may open: throwaway),
    requests name its real workspace, session, run and subscription ids. With
    `huge`, some cases are over the daemon's size limit (16 MiB each).
    """
    counts: Counter[str] = Counter()
    violations: list[str] = []
    repro = _repro(seed)

    def violation(text: str) -> None:
        if len(violations) < 50:
            violations.append(f"{text} ({repro})")

    with tempfile.TemporaryDirectory(prefix="agentd-fuzz-") as tmp:
        missing = Path(tmp) / "missing"
        async with open_client(socket_path) as client:
            ctx = await make_context(client, project, missing)
            max_ping = 0.0

            async def pinger(done: trio.Event) -> None:
                nonlocal max_ping
                async with open_client(socket_path) as pinging:
                    while not done.is_set():
                        start = trio.current_time()
                        with trio.move_on_after(ping_bound) as scope:
                            await pinging.call("ping")
                        took = trio.current_time() - start
                        max_ping = max(max_ping, took)
                        counts["pings"] += 1
                        if scope.cancelled_caught:
                            violation(f"ping not answered within {ping_bound:g} s")
                            return
                        if not _alive(pid):
                            return
                        await trio.sleep(0.05)

            async def worker(index: int) -> None:
                number = 0
                while trio.current_time() < deadline and _alive(pid):
                    rng = random.Random(f"{seed}:{index}:{number}")
                    plan = gen_plan(RandomSource(rng))
                    if huge and rng.random() < 0.01:
                        plan = Plan((Case("huge", size=DEFAULT_MAX_MESSAGE_SIZE + 1),), "read")
                    where = f"gen_plan(RandomSource(random.Random('{seed}:{index}:{number}')))"
                    # Its sends and each reply are bounded within; this is the bound on all of it.
                    with trio.move_on_after(reply_bound * 4) as plan_bound:
                        problems, done = await run_plan(socket_path, plan, ctx, reply_bound=reply_bound)
                    if plan_bound.cancelled_caught:
                        problems, done = [f"a connection's plan took over {reply_bound * 4:g} s"], Counter()
                    counts.update(done)
                    counts["connections"] += 1
                    for text in problems:
                        violation(f"{text} (the plan: {where})")
                    number += 1

            async def refresher() -> None:
                # Fuzzed requests delete sessions: new ones keep the ids worth naming.
                number = 0
                with trio.move_on_at(deadline):
                    while project is not None and _alive(pid):
                        await trio.sleep(5)
                        number += 1
                        try:
                            await add_session(client, ctx, f"fuzz {number}")
                        except (RpcError, ConnectionLost) as exc:
                            violation(f"the fuzzing's own session {number} failed: {exc}")
                            return

            done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pinger, done)
                async with trio.open_nursery() as fuzzers:
                    for index in range(workers):
                        fuzzers.start_soon(worker, index)
                    fuzzers.start_soon(refresher)
                done.set()
            if not _alive(pid):
                violation("the daemon exited")
            counts["max_ping_ms"] = int(max_ping * 1000)
    return Stats(dict(counts), violations)
