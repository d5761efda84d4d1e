"""config.toml into a Config: its shape as attrs classes, structured by a strict cattrs converter.

Every mistake is reported at once, on its line. cattrs's detailed validation
gives each mistake's path in the file (`providers.openai.max_retries`); the
types below say what each key may hold, and `_Locator` maps a path to the line
it was written on. What no single key can say (a model naming a provider that
is not defined, Anthropic without a key) is checked after, on the parsed file,
reading each key through the same types.

A project's `.agentd/config.toml` goes through the same machinery as
`_ProjectFile`: the same `[mcp.NAME]` tables, and any other key a mistake.

Messages name keys and types but never repeat a value that could be a secret.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, NewType, TypeVar

import attrs
import cattrs
from cattrs.cols import is_mapping, is_sequence, list_structure_factory
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_mapping_structure_fn

from agentd.mcp import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MCP_WAIT,
    DEFAULT_STARTUP_TIMEOUT,
    McpServerConfig,
    McpSource,
    server_name_problem,
)
from agentd.permissions import DEFAULT_PERMISSION_TIMEOUT, PermissionSettings, rule_problem

from ._config import (
    BUILTIN_MODELS,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_STEPS,
    FALLBACK_MODEL,
    PROVIDER_TYPES,
    AgentSettings,
    Config,
    ConfigError,
    ConfigProblem,
    ModelConfig,
    ProviderConfig,
    names_a_model,
)

__all__ = ["from_file", "project_mcp_servers", "url_problem"]

Path = tuple[str, ...]
_T = TypeVar("_T")

# --- what each key may hold ---------------------------------------------------------------------------

_ProviderType = NewType("_ProviderType", str)
_Url = NewType("_Url", str)
_VariableName = NewType("_VariableName", str)
_NonEmpty = NewType("_NonEmpty", str)
_Count = NewType("_Count", int)  # >= 0
_Positive = NewType("_Positive", int)  # >= 1
_Seconds = NewType("_Seconds", float)  # > 0, finite
_Wait = NewType("_Wait", float)  # >= 0, finite
_Rule = NewType("_Rule", str)  # a permission rule: TOOL, TOOL:PREFIX or *
_Command = NewType("_Command", list[str])  # an MCP server's program, then its arguments
_EnvName = NewType("_EnvName", str)  # a variable an MCP server is given
_ToolName = NewType("_ToolName", str)  # an MCP server's tool, by its MCP name
_ToolNames = NewType("_ToolNames", list[str])  # those, or "*"


@attrs.frozen
class _ProviderTable:
    type: _ProviderType
    base_url: _Url
    api_key_env: _VariableName | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    max_retries: _Count = _Count(DEFAULT_MAX_RETRIES)
    idle_timeout: _Seconds = _Seconds(DEFAULT_IDLE_TIMEOUT)


@attrs.frozen
class _ModelTable:
    provider: str
    model: _NonEmpty
    context_window: _Positive | None = None
    max_output_tokens: _Positive | None = None


@attrs.frozen
class _PermissionsTable:
    allow: list[_Rule] = attrs.field(factory=list)
    timeout: _Seconds = _Seconds(DEFAULT_PERMISSION_TIMEOUT)


@attrs.frozen
class _AgentTable:
    max_steps: _Positive = _Positive(DEFAULT_MAX_STEPS)
    mcp_wait: _Wait = _Wait(DEFAULT_MCP_WAIT)


@attrs.frozen
class _McpTable:
    # Exactly one of command (stdio) and url (streamable HTTP): checked on the raw table, with env and headers.
    command: _Command | None = None
    url: _Url | None = None
    env: dict[_EnvName, str] = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)
    enabled: bool = True
    allow: _ToolNames = attrs.field(factory=lambda: _ToolNames([]))
    startup_timeout: _Seconds = _Seconds(DEFAULT_STARTUP_TIMEOUT)
    call_timeout: _Seconds = _Seconds(DEFAULT_CALL_TIMEOUT)


@attrs.frozen
class _File:
    providers: dict[str, _ProviderTable] = attrs.field(factory=dict)
    models: dict[str, _ModelTable] = attrs.field(factory=dict)
    default_model: str | None = None
    permissions: _PermissionsTable = attrs.field(factory=_PermissionsTable)
    agent: _AgentTable = attrs.field(factory=_AgentTable)
    mcp: dict[str, _McpTable] = attrs.field(factory=dict)


@attrs.frozen
class _ProjectFile:
    """A project's .agentd/config.toml: its own MCP servers, and nothing else of the user's configuration."""

    mcp: dict[str, _McpTable] = attrs.field(factory=dict)


for _shape in (_ProviderTable, _ModelTable, _PermissionsTable, _AgentTable, _McpTable, _File, _ProjectFile):
    attrs.resolve_types(_shape)


class _Mistake(ValueError):
    """What is wrong with one value, worded to follow the key's name: "must be a string, not an integer"."""


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date or time"


def _string(value: object) -> str:
    if type(value) is not str:
        raise _Mistake(f"must be a string, not {_type_name(value)}")
    return value


def _integer(value: object, minimum: int) -> int:
    # bool is an int subclass; `max_retries = true` is a mistake, not 1.
    if type(value) is not int:
        raise _Mistake(f"must be an integer, not {_type_name(value)}")
    if value < minimum:
        raise _Mistake(f"must be at least {minimum}, not {value}")
    return value


def _seconds(value: object) -> float:
    if type(value) not in (int, float):
        raise _Mistake(f"must be a number of seconds, not {_type_name(value)}")
    assert isinstance(value, (int, float))
    if not (math.isfinite(value) and value > 0):
        raise _Mistake(f"must be a positive number of seconds, not {value}")
    return float(value)


def _wait(value: object) -> float:
    if type(value) not in (int, float):
        raise _Mistake(f"must be a number of seconds, not {_type_name(value)}")
    assert isinstance(value, (int, float))
    if not (math.isfinite(value) and value >= 0):
        raise _Mistake(f"must be a number of seconds, 0 or more, not {value}")
    return float(value)


def _boolean(value: object) -> bool:
    # cattrs would take any value's truth: `enabled = "no"` is a mistake, not True.
    if type(value) is not bool:
        raise _Mistake(f"must be true or false, not {_type_name(value)}")
    return value


def _provider_type(value: object) -> str:
    kind = _string(value)
    if kind not in PROVIDER_TYPES:
        raise _Mistake(f"must be 'openai' or 'anthropic', not {kind!r}")
    return kind


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as a provider's base URL, or None."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- parsed on access: a port out of range raises here
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if not parts.hostname:
        return "has no host"
    return None


def _url(value: object) -> str:
    url = _string(value)
    trouble = url_problem(url)
    if trouble is not None:
        raise _Mistake(trouble)
    return url


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _variable_name(value: object) -> str:
    name = _string(value)
    if not _VARIABLE_NAME.fullmatch(name):
        # Most likely the key itself was pasted here: say so without repeating it.
        raise _Mistake("must be the NAME of an environment variable (letters, digits, _), not the key itself")
    return name


def _non_empty(value: object) -> str:
    text = _string(value)
    if not text:
        raise _Mistake("must not be empty")
    return text


def _rule(value: object) -> str:
    text = _string(value)
    problem = rule_problem(text)
    if problem is not None:
        raise _Mistake(f"is not a usable rule: {text!r} {problem}")
    return text


def _command(value: object) -> list[str]:
    if type(value) is not list:
        # `command = "npx server"`: not split here, as a shell would split it differently.
        raise _Mistake(f"must be an array: the program, then its arguments, each a string; not {_type_name(value)}")
    words: list[str] = _converter.structure(value, list[str])
    if not words:
        raise _Mistake("must not be empty: the program, then its arguments")
    if not words[0]:
        raise _Mistake("must start with the program, not an empty string")
    return words


def _env_name(value: object) -> str:
    name = _string(value)
    if not _VARIABLE_NAME.fullmatch(name):
        raise _Mistake("is not a usable environment variable name (letters, digits and _, not starting with a digit)")
    return name


def _tool_name(value: object) -> str:
    name = _non_empty(value)
    if name.startswith("mcp__"):
        raise _Mistake(f"names the tool as the model sees it: give its MCP name, without mcp__SERVER__ ({name!r})")
    return name


def _tool_names(value: object) -> list[str]:
    if value == "*":
        return ["*"]
    if type(value) is not list:
        raise _Mistake(f'must be an array of the server\'s tool names, or "*" for all of them, not {_type_name(value)}')
    names: list[_ToolName] = _converter.structure(value, list[_ToolName])
    return list(names)


def _array(type_: Any, converter: cattrs.Converter) -> Any:
    # cattrs would iterate a string into its characters: `allow = "edit"` is a mistake, not four rules.
    inner = list_structure_factory(type_, converter)

    def hook(value: object, t: object) -> object:
        if type(value) is not list:
            raise _Mistake(f"must be an array, not {_type_name(value)}")
        return inner(value, t)

    return hook


class _NotATable(_Mistake):
    def __init__(self, found: object) -> None:
        self.found = _type_name(found)
        super().__init__(f"must be a table, not {self.found}")


def _table(type_: Any, converter: cattrs.Converter) -> Any:
    # cattrs would call .items() on whatever it is given, and index a string.
    inner = (
        # Paths need detailed validation: asked for here, whatever this cattrs version defaults to.
        make_mapping_structure_fn(type_, converter, detailed_validation=True)
        if is_mapping(type_)
        else converter.gen_structure_attrs_fromdict(type_)
    )

    def hook(value: object, t: object) -> object:
        if type(value) is not dict:
            raise _NotATable(value)
        return inner(value, t)

    return hook


_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
_converter.register_structure_hook_factory(lambda t: is_mapping(t) or attrs.has(t), _table)
_converter.register_structure_hook_factory(is_sequence, _array)
_converter.register_structure_hook(str, lambda value, _: _string(value))
_converter.register_structure_hook(bool, lambda value, _: _boolean(value))
for _type, _hook in (
    (_ProviderType, _provider_type),
    (_Url, _url),
    (_VariableName, _variable_name),
    (_NonEmpty, _non_empty),
    (_Count, lambda value: _integer(value, 0)),
    (_Positive, lambda value: _integer(value, 1)),
    (_Seconds, _seconds),
    (_Wait, _wait),
    (_Rule, _rule),
    (_Command, _command),
    (_EnvName, _env_name),
    (_ToolName, _tool_name),
    (_ToolNames, _tool_names),
):
    _converter.register_structure_hook(_type, lambda value, _, check=_hook: check(value))


# --- from text to a Config ------------------------------------------------------------------------------


def from_file(data: bytes, path: str) -> Config:
    """The configuration `data` (read from `path`) says; ConfigError lists every mistake, in line order."""
    return _config(_parse(data, path, _File, _cross_checks), path)


# A project file's mistake for any key but [mcp.NAME] tables.
_PROJECT_KEYS_ONLY = "only [mcp.NAME] tables are read from a project's .agentd/config.toml"


def project_mcp_servers(data: bytes, path: str) -> tuple[McpServerConfig, ...]:
    """The MCP servers of a project's .agentd/config.toml (`data`, read from `path`), in the file's order.

    The same `[mcp.NAME]` tables as config.toml's, checked the same way; any
    other key is a mistake. ConfigError lists every mistake, in line order.
    """
    return _mcp_servers(_parse(data, path, _ProjectFile, _mcp_checks).mcp, "workspace")


def _parse(data: bytes, path: str, shape: type[_T], checks: Callable[[dict[str, Any]], list[tuple[Path, str]]]) -> _T:
    """`data` structured as `shape`, with `checks` of what no single key can say; ConfigError for every mistake."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigProblem(line, "the file is not UTF-8 text")], path) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc)], path) from None
    mistakes: list[tuple[Path, str]] = []
    parsed: _T | None = None
    try:
        parsed = _converter.structure(raw, shape)
    except Exception as exc:  # every structuring failure is made of mistakes to report
        mistakes += _mistakes(exc, raw)
    mistakes += checks(raw)
    if mistakes or parsed is None:
        locator = _Locator(text)
        problems = [ConfigProblem(locator.line(at), message) for at, message in mistakes]
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        raise ConfigError(problems, path)
    return parsed


def _mcp_servers(tables: dict[str, _McpTable], source: McpSource) -> tuple[McpServerConfig, ...]:
    return tuple(
        McpServerConfig(
            name=name,
            command=tuple(table.command or ()),
            env={str(variable): value for variable, value in table.env.items()},
            url=table.url,
            headers=dict(table.headers),
            enabled=table.enabled,
            allow=tuple(table.allow),
            startup_timeout=table.startup_timeout,
            call_timeout=table.call_timeout,
            source=source,
        )
        for name, table in tables.items()
    )


def _config(parsed: _File, path: str) -> Config:
    providers = {
        name: ProviderConfig(
            name=name,
            type=table.type,
            base_url=table.base_url.rstrip("/"),
            api_key_env=table.api_key_env,
            headers=table.headers,
            max_retries=table.max_retries,
            idle_timeout=table.idle_timeout,
        )
        for name, table in parsed.providers.items()
    }
    models = {
        alias: ModelConfig(alias, table.provider, table.model, table.context_window, table.max_output_tokens)
        for alias, table in parsed.models.items()
    }
    permissions = PermissionSettings(tuple(parsed.permissions.allow), parsed.permissions.timeout)
    agent = AgentSettings(parsed.agent.max_steps, parsed.agent.mcp_wait)
    mcp = _mcp_servers(parsed.mcp, "config")
    if parsed.default_model is None:
        return Config(
            providers,
            models,
            FALLBACK_MODEL,
            default_is_fallback=True,
            source=path,
            permissions=permissions,
            agent=agent,
            mcp=mcp,
        )
    return Config(
        providers,
        models,
        parsed.default_model,
        default_is_fallback=False,
        source=path,
        permissions=permissions,
        agent=agent,
        mcp=mcp,
    )


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)$")


def _syntax_problem(exc: tomllib.TOMLDecodeError) -> ConfigProblem:
    message = str(exc)
    found = _TOML_POSITION.search(message)
    if found is None:
        return ConfigProblem(None, message)  # "(at end of document)": no line to point at
    return ConfigProblem(int(found.group(1)), message[: found.start()])


# --- a structuring failure into mistakes, each at its path -------------------------------------------


def _leaves(exc: BaseException, at: Path) -> Iterator[tuple[Path, BaseException]]:
    if isinstance(exc, cattrs.ClassValidationError):
        attributes, others = exc.group_exceptions()
        for inner, attribute in attributes:
            yield from _leaves(inner, (*at, attribute.name))
        for inner in others:
            yield from _leaves(inner, at)
    elif isinstance(exc, cattrs.IterableValidationError):
        items, others = exc.group_exceptions()
        for inner, item in items:
            yield from _leaves(inner, (*at, str(item.index)))
        for inner in others:
            yield from _leaves(inner, at)
    else:
        yield at, exc


def _mistakes(exc: BaseException, raw: dict[str, Any]) -> list[tuple[Path, str]]:
    mistakes: list[tuple[Path, str]] = []
    missing: dict[Path, list[str]] = {}
    for at, leaf in _leaves(exc, ()):
        if isinstance(leaf, KeyError):
            # One mistake per table however many keys it lacks, where the first of them would go.
            table = at[:-1]
            if table not in missing:
                missing[table] = []
                mistakes.append((table, ""))
            missing[table].append(at[-1])
        elif isinstance(leaf, ForbiddenExtraKeysError):
            known = tuple(field.name for field in attrs.fields(leaf.cl))
            present = _at(raw, at)
            extra = [key for key in (present if isinstance(present, dict) else ()) if key in leaf.extra_fields]
            mistakes += [((*at, key), _unknown_key(at, key, known, leaf.cl)) for key in extra]
        elif isinstance(leaf, _NotATable) and len(at) <= 2:
            kind = f"a table of [{at[0]}.NAME] tables" if len(at) == 1 and at[0] in _NAMED_TABLES else "a table"
            mistakes.append((at, f"{'.'.join(_quote(part) for part in at)} must be {kind}, not {leaf.found}"))
        elif isinstance(leaf, _Mistake):
            mistakes.append((at, f"{_subject(at)} {leaf}"))
        else:
            mistakes.append((at, f"{_subject(at)} is not valid ({type(leaf).__name__})"))
    return [
        (at, f"{_subject(at)} is missing {' and '.join(missing[at])}" if message == "" else message)
        for at, message in mistakes
    ]


def _at(raw: dict[str, Any], at: Path) -> object:
    value: object = raw
    for part in at:
        value = value.get(part) if isinstance(value, dict) else None
    return value


# Sections made of named tables ([providers.NAME]), and plain tables ([permissions]).
_NAMED_TABLES = ("providers", "models", "mcp")
_PLAIN_TABLES = ("permissions", "agent")


def _subject(at: Path) -> str:
    """How a mistake names where it is: `[providers.openai] headers.X-Title`, `[permissions] allow[2]`, `agent`."""
    if at and at[0] in _PLAIN_TABLES:
        keys = "".join(f"[{part}]" if part.isdigit() else f".{_quote(part)}" for part in at[1:])
        return f"[{at[0]}]" + (" " + keys.lstrip(".") if keys else "")
    if len(at) >= 2 and at[0] in _NAMED_TABLES:
        table = f"[{at[0]}.{_quote(at[1])}]"
        keys = "".join(f"[{part}]" if part.isdigit() else f".{_quote(part)}" for part in at[2:])
        return f"{table} {keys.lstrip('.')}" if keys else table
    return ".".join(_quote(part) for part in at)


def _quote(name: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Keys other programs' MCP configurations have, and what says the same here.
_MCP_KEY_HINTS = {
    "args": "command holds the program, then its arguments",
    "type": "a server is stdio when it has command, streamable HTTP when it has url",
    "transport": "a server is stdio when it has command, streamable HTTP when it has url",
    "disabled": "enabled = false turns a server off",
}


def _unknown_key(at: Path, key: str, known: tuple[str, ...], shape: type) -> str:
    if shape is _ProjectFile:
        return f"unknown top-level key {key!r}: {_PROJECT_KEYS_ONLY}"
    hint = _MCP_KEY_HINTS.get(key) if shape is _McpTable else None
    # A hint says more than a close name would ('disabled' is not 'enabled').
    close = [] if hint else difflib.get_close_matches(key, known, n=1)
    suggestion = f" (did you mean {close[0]!r}?)" if close else ""
    if not at:
        return f"unknown top-level key {key!r}{suggestion}"
    message = f"{_subject(at)} has unknown key {key!r}{suggestion}"
    if "api_key_env" in known and any(word in key.lower() for word in ("key", "token", "secret", "password")):
        message += "; api_key_env names the environment variable holding the key, never the key itself"
    if hint:
        message += f"; {hint}"
    return message


# --- what no single key can say -------------------------------------------------------------------------


def _tables(raw: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    value = raw.get(section)
    if not isinstance(value, dict):
        return {}
    return {name: table for name, table in value.items() if isinstance(table, dict)}


def _valid(table: dict[str, Any], shape: type, key: str) -> Any:
    """`table[key]` as `shape` takes it, or None when it is absent or a mistake (reported on its own)."""
    if key not in table:
        return None
    try:
        return _converter.structure(table[key], attrs.fields_dict(shape)[key].type)  # type: ignore[arg-type]
    except Exception:
        return None


_NAME_RULE = "it must be non-empty and without '/' (models are provider/model)"


def _cross_checks(raw: dict[str, Any]) -> list[tuple[Path, str]]:
    mistakes: list[tuple[Path, str]] = []

    def mistake(at: Path, message: str) -> None:
        mistakes.append((at, message))

    # Names are checked against every table, valid or not: a broken provider is reported once, as itself.
    providers = _tables(raw, "providers")
    models = _tables(raw, "models")
    for name, table in providers.items():
        at = ("providers", name)
        if not name or "/" in name:
            mistake(at, f"{_subject(at)} is not a usable name: {_NAME_RULE}")
        if _valid(table, _ProviderTable, "type") == "anthropic" and "api_key_env" not in table:
            mistake(at, f"{_subject(at)} needs api_key_env: Anthropic's API requires a key")
    for alias, table in models.items():
        at = ("models", alias)
        if not alias or "/" in alias:
            mistake(at, f"{_subject(at)} is not a usable alias: {_NAME_RULE}")
        elif alias in BUILTIN_MODELS:
            mistake(at, f"{_subject(at)} cannot be an alias: {alias!r} is a built-in model")
        provider = _valid(table, _ModelTable, "provider")
        if provider is not None and provider not in providers:
            defined = ", ".join(providers) if providers else "none"
            mistake(
                (*at, "provider"), f"{_subject(at)} provider {provider!r} is not defined (defined providers: {defined})"
            )
        context_window = _valid(table, _ModelTable, "context_window")
        max_output = _valid(table, _ModelTable, "max_output_tokens")
        if context_window is not None and max_output is not None and max_output > context_window:
            mistake(
                (*at, "max_output_tokens"),
                f"{_subject(at)} max_output_tokens ({max_output}) is larger than context_window ({context_window})",
            )
    default = _valid(raw, _File, "default_model")
    if default is not None and not names_a_model(default, models, providers):
        mistake(
            ("default_model",),
            f"default_model {default!r} names no model: it is not an alias, a built-in"
            f" ({', '.join(BUILTIN_MODELS)}) or provider/model with a defined provider",
        )
    return mistakes + _mcp_checks(raw)


def _mcp_checks(raw: dict[str, Any]) -> list[tuple[Path, str]]:
    """What is wrong with `[mcp.NAME]` tables beyond their keys: the name, and which transport they are."""
    mistakes: list[tuple[Path, str]] = []
    for name, table in _tables(raw, "mcp").items():
        at = ("mcp", name)
        problem = server_name_problem(name)
        if problem is not None:
            mistakes.append((at, f"{_subject(at)} {problem}"))
        stdio, http = "command" in table, "url" in table
        if stdio and http:
            mistakes.append(((*at, "url"), f"{_subject(at)} has both command and url: a server is one or the other"))
        elif not stdio and not http:
            mistakes.append(
                (at, f"{_subject(at)} needs command (a program to start, spoken to on stdio) or url (streamable HTTP)")
            )
            continue  # which of env and headers it may have is not known yet
        if "env" in table and not stdio:
            mistakes.append(((*at, "env"), f"{_subject(at)} env is for a server started by command, not one at a url"))
        if "headers" in table and not http:
            mistakes.append(
                ((*at, "headers"), f"{_subject(at)} headers are for a server at a url, not one started by command")
            )
    return mistakes


# --- where things are in the file -------------------------------------------------------------------

_BARE_KEY = r"[A-Za-z0-9_-]+"
_ONE_KEY = rf"""(?:{_BARE_KEY}|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED_KEY = rf"{_ONE_KEY}(?:\s*\.\s*{_ONE_KEY})*"
_HEADER_LINE = re.compile(rf"\s*\[\[?\s*({_DOTTED_KEY})\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(rf"\s*({_DOTTED_KEY})\s*=")
_KEY_PART = re.compile(_ONE_KEY)


class _Locator:
    """The first line of each table and key, found by reading the text: tomllib keeps no positions.

    Understands `[a.b]` and `[[a.b]]` headers, `key =` and dotted `a.b.key =` lines,
    quoted keys, and skips multi-line strings. A key inside an inline table is not
    seen; it is placed on the line of the table that holds it.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        table: Path = ()
        open_string: str | None = None  # the delimiter of a multi-line string still open
        for number, line in enumerate(text.split("\n"), 1):
            if open_string is not None:
                if line.count(open_string) % 2:
                    open_string = None
                continue
            header = _HEADER_LINE.match(line)
            assignment = None if header else _KEY_LINE.match(line)
            if header:
                table = _key_path(header.group(1))
                self._note(table, number)
            elif assignment:
                self._note(table + _key_path(assignment.group(1)), number)
            for delimiter in ('"""', "'''"):
                if line.count(delimiter) % 2:
                    open_string = delimiter
                    break

    def _note(self, path: Path, number: int) -> None:
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], number)

    def line(self, path: Path) -> int | None:
        """The line of `path`, else of the nearest enclosing table or key (an inline table's)."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None


def _key_path(dotted: str) -> Path:
    parts: list[str] = []
    for match in _KEY_PART.finditer(dotted):
        part = match.group(0)
        if part.startswith('"'):
            try:
                part = tomllib.loads(f"k = {part}")["k"]
            except tomllib.TOMLDecodeError:
                part = part[1:-1]
        elif part.startswith("'"):
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)
