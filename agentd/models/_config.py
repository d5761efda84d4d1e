"""Which models agentd can run: providers and aliases from `config.toml`, or what the environment offers.

The file is `$XDG_CONFIG_HOME/agentd/config.toml`, else `~/.config/agentd/config.toml`:

    default_model = "fast"                  # an alias, a provider/model name, or a built-in

    [providers.openai]
    type = "openai"                         # "openai" (also any OpenAI-compatible server) | "anthropic"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"          # the variable's NAME; optional for openai-type servers
    headers = { "X-Title" = "agentd" }      # optional
    max_retries = 3                         # optional, >= 0
    idle_timeout = 60                       # optional: seconds allowed between two streamed chunks

    [models.fast]
    provider = "openai"
    model = "gpt-4.1-mini"
    context_window = 1047576                # optional
    max_output_tokens = 32768               # optional

A model is named by an alias, as `provider/model` (split at the first `/`, so
`ollama/library/qwen` is model `library/qwen`), or as a built-in: `echo`, `scripted`.

With no file, the environment decides: `OPENAI_API_KEY` (and `OPENAI_BASE_URL`)
gives provider `openai`, `ANTHROPIC_API_KEY` (and `ANTHROPIC_BASE_URL`) gives
`anthropic`, `OLLAMA_HOST` gives `ollama`, an openai-type provider with no key.
The default is then `openai/gpt-4.1`, else `anthropic/claude-sonnet-4-5`, else
`echo`: Ollama's model names are whatever was pulled locally, so none can be
assumed. When a file exists the environment adds no providers: what runs is
what the file says.

Keys are never read into a config: a provider holds the name of the variable,
and `ProviderConfig.api_key()` reads it when a request is about to be made.

A running daemon reads the file again when it changes (`ConfigFile`).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
import urllib.parse
from typing import TYPE_CHECKING, Any

import attrs

from agentd.models._base import UnknownModelError

log = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_MODELS",
    "Config",
    "ConfigError",
    "ConfigFile",
    "ConfigProblem",
    "ModelConfig",
    "ProviderConfig",
    "ResolvedModel",
    "config_path",
    "load_config",
]

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

BUILTIN_MODELS = ("echo", "scripted")
FALLBACK_MODEL = "echo"
PROVIDER_TYPES = ("openai", "anthropic")

DEFAULT_MAX_RETRIES = 3
DEFAULT_IDLE_TIMEOUT = 60.0
OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
OLLAMA_PORT = "11434"
OPENAI_DEFAULT_MODEL = "openai/gpt-4.1"
ANTHROPIC_DEFAULT_MODEL = "anthropic/claude-sonnet-4-5"

_TOP_KEYS = ("providers", "models", "default_model")
_PROVIDER_KEYS = ("type", "base_url", "api_key_env", "headers", "max_retries", "idle_timeout")
_MODEL_KEYS = ("provider", "model", "context_window", "max_output_tokens")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


# --- what a loaded configuration is ---------------------------------------------------------------


@attrs.frozen
class ConfigProblem:
    line: int | None
    message: str


class ConfigError(Exception):
    """Everything wrong with a configuration at once, one `path:LINE: message` per line."""

    def __init__(self, problems: list[ConfigProblem], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        super().__init__("\n".join(_render(problem, path) for problem in problems))


def _render(problem: ConfigProblem, path: str | None) -> str:
    where = path or ""
    if problem.line is not None:
        where = f"{where}:{problem.line}" if where else f"line {problem.line}"
    return f"{where}: {problem.message}" if where else problem.message


def _header_names(headers: dict[str, str]) -> str:
    # Headers can carry credentials (a proxy's token, say): show which are set, never their values.
    return "{" + ", ".join(f"{name!r}: ..." for name in headers) + "}"


@attrs.frozen
class ProviderConfig:
    name: str
    type: str  # one of PROVIDER_TYPES
    base_url: str  # without a trailing "/"
    api_key_env: str | None = None  # the variable holding the key; None: send no key
    headers: dict[str, str] = attrs.field(factory=dict, repr=_header_names)
    max_retries: int = DEFAULT_MAX_RETRIES
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # seconds allowed between two streamed chunks

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key, read from the environment now; None when this provider takes no key."""
        if self.api_key_env is None:
            return None
        value = _env(environ).get(self.api_key_env)
        if not value:
            state = "is not set" if value is None else "is empty"
            message = f"provider {self.name!r} needs an API key, but environment variable {self.api_key_env} {state}"
            raise ConfigError([ConfigProblem(None, message)])
        return value

    @property
    def max_tokens_field(self) -> str:
        """The request field that caps an answer's length.

        OpenAI itself has deprecated `max_tokens` for `max_completion_tokens`
        (its reasoning models refuse the old name), while the servers that
        copy its API (Ollama, llama.cpp, LM Studio) know only `max_tokens`.
        """
        if self.type == "openai" and urllib.parse.urlsplit(self.base_url).hostname == "api.openai.com":
            return "max_completion_tokens"
        return "max_tokens"


@attrs.frozen
class ModelConfig:
    alias: str | None
    provider: str
    model: str  # the provider's own id for it
    context_window: int | None = None
    max_output_tokens: int | None = None


@attrs.frozen
class ResolvedModel:
    """What a run needs to reach its model; `provider` is None for the built-ins."""

    provider: ProviderConfig | None
    model: str
    alias: str | None = None
    max_output_tokens: int | None = None


@attrs.frozen
class Config:
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]  # by alias
    default_model: str = FALLBACK_MODEL
    default_is_fallback: bool = True  # nothing chose the default: `echo`, because no real model is configured
    source: str = "environment"  # or the file's path

    def resolve(self, name: str | None) -> ResolvedModel:
        """The model `name` means (None: the default); UnknownModelError says what exists instead."""
        key = name or self.default_model
        if key in BUILTIN_MODELS:
            return ResolvedModel(provider=None, model=key)
        alias = self.models.get(key)
        if alias is not None:
            return ResolvedModel(self.providers[alias.provider], alias.model, key, alias.max_output_tokens)
        provider, model = _split_name(key)
        if provider in self.providers and model:
            return ResolvedModel(self.providers[provider], model)
        raise UnknownModelError(f"unknown model {key!r} (available: {self._available()})")

    def _available(self) -> str:
        groups = [", ".join(BUILTIN_MODELS)]
        if self.models:
            groups.append("aliases: " + ", ".join(self.models))
        if self.providers:
            groups.append("providers: " + ", ".join(f"{name}/<model>" for name in self.providers))
        return "; ".join(groups)

    def describe(self) -> list[dict[str, str | bool | None]]:
        """One entry per name a run can use: built-ins, aliases, the default, providers. No secrets."""
        entries: list[dict[str, str | bool | None]] = [
            {"name": name, "kind": "builtin", "provider": None, "model": name, "default": name == self.default_model}
            for name in BUILTIN_MODELS
        ]
        for alias, model in self.models.items():
            entries.append(
                {
                    "name": alias,
                    "kind": "alias",
                    "provider": model.provider,
                    "model": model.model,
                    "default": alias == self.default_model,
                }
            )
        if self.default_model not in BUILTIN_MODELS and self.default_model not in self.models:
            provider, model_id = _split_name(self.default_model)
            entries.append(
                {"name": self.default_model, "kind": "model", "provider": provider, "model": model_id, "default": True}
            )
        for name in self.providers:
            entries.append(
                {"name": f"{name}/<model>", "kind": "provider", "provider": name, "model": None, "default": False}
            )
        return entries


def _split_name(name: str) -> tuple[str, str]:
    provider, _, model = name.partition("/")
    return provider, model


def _names_a_model(name: str, aliases: Collection[str], providers: Collection[str]) -> bool:
    provider, model = _split_name(name)
    return name in BUILTIN_MODELS or name in aliases or (provider in providers and bool(model))


# --- loading ----------------------------------------------------------------------------------------


def config_path(environ: Mapping[str, str] | None = None) -> str:
    """`$XDG_CONFIG_HOME/agentd/config.toml`, else `~/.config/agentd/config.toml`."""
    env = _env(environ)
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "agentd", "config.toml")


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The file at `path` (default: `config_path()`) if it exists, else what the environment offers.

    A file is checked whole: ConfigError lists every problem found, not the first.
    """
    env = _env(environ)
    if path is None:
        path = config_path(env)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return _from_environment(env)
    except OSError as exc:
        raise ConfigError([ConfigProblem(None, f"cannot read the configuration: {exc.strerror}")], path) from None
    return _from_file(data, path)


class ConfigFile:
    """The configuration as the file says now: read again whenever the file changes.

    A daemon lives for days, and whoever edits config.toml expects the next
    run to use it. Each use costs a stat of the file; a change with mistakes
    is logged and the last good configuration stays in use (`mistakes` says
    what is wrong). The environment is read once, at start.
    """

    def __init__(self, path: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        self._env = dict(_env(environ))
        self.path = path or config_path(self._env)
        self._stamp = self._stat()
        self.config = load_config(self.path, self._env)  # mistakes at start stop the start: ConfigError
        self.mistakes: str | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> Config:
        stamp = self._stat()
        if stamp != self._stamp:
            self._read(stamp)
        return self.config

    def reload(self) -> None:
        """Read the file now, changed or not (SIGHUP)."""
        self._read(self._stat())

    def _read(self, stamp: tuple[int, int, int] | None) -> None:
        # Stat taken before reading: a write after this read changes it again, and is read next time.
        self._stamp = stamp
        try:
            self.config = load_config(self.path, self._env)
        except ConfigError as exc:
            self.mistakes = str(exc)
            log.warning("%s has mistakes; still using the configuration from before:\n%s", self.path, exc)
        else:
            self.mistakes = None
            log.info("read the configuration again (%s): default model %s", self.path, self.config.default_model)


def _from_environment(env: Mapping[str, str]) -> Config:
    providers: dict[str, ProviderConfig] = {}
    if env.get("OPENAI_API_KEY"):
        base_url = (env.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")
        providers["openai"] = ProviderConfig("openai", "openai", base_url, "OPENAI_API_KEY")
    if env.get("ANTHROPIC_API_KEY"):
        base_url = (env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL).rstrip("/")
        providers["anthropic"] = ProviderConfig("anthropic", "anthropic", base_url, "ANTHROPIC_API_KEY")
    if env.get("OLLAMA_HOST"):
        providers["ollama"] = ProviderConfig("ollama", "openai", _ollama_base_url(env["OLLAMA_HOST"]))
    problems = [
        ConfigProblem(None, f"environment variable {variable}: the provider URL {provider.base_url} {trouble}")
        for provider, variable in (
            (providers.get("openai"), "OPENAI_BASE_URL"),
            (providers.get("anthropic"), "ANTHROPIC_BASE_URL"),
            (providers.get("ollama"), "OLLAMA_HOST"),
        )
        if provider is not None and (trouble := _url_problem(provider.base_url)) is not None
    ]
    if problems:
        raise ConfigError(problems)
    if "openai" in providers:
        default = OPENAI_DEFAULT_MODEL
    elif "anthropic" in providers:
        default = ANTHROPIC_DEFAULT_MODEL
    else:
        default = FALLBACK_MODEL  # Ollama's model names are whatever was pulled locally: none can be assumed
    return Config(providers, {}, default, default_is_fallback=default == FALLBACK_MODEL, source="environment")


def _url_problem(url: str) -> str | None:
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


def _ollama_base_url(host: str) -> str:
    """`OLLAMA_HOST` read the way Ollama's own client reads it, plus its OpenAI-compatible `/v1`."""
    scheme, sep, rest = host.strip().partition("://")
    if not sep:
        scheme, rest = "http", scheme
    hostport, slash, path = rest.partition("/")
    if not sep:
        # Only a bare host gets Ollama's port: "http://host" means port 80, as any URL does.
        hostport = _with_ollama_port(hostport)
    return f"{scheme}://{hostport}{slash}{path}".rstrip("/") + "/v1"


def _with_ollama_port(hostport: str) -> str:
    if hostport.startswith("["):
        has_port = "]:" in hostport
    elif hostport.count(":") > 1:
        hostport, has_port = f"[{hostport}]", False  # a bare IPv6 address
    else:
        has_port = ":" in hostport
    if not hostport or hostport.startswith(":"):
        hostport = "127.0.0.1" + hostport
    return hostport if has_port else f"{hostport}:{OLLAMA_PORT}"


def _from_file(data: bytes, path: str) -> Config:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigProblem(line, "the file is not UTF-8 text")], path) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc)], path) from None
    check = _Check(_Locator(text))
    config = check.config(raw, path)
    if config is None or check.problems:
        problems = sorted(check.problems, key=lambda p: (p.line is None, p.line or 0))
        raise ConfigError(problems, path)
    return config


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)$")


def _syntax_problem(exc: tomllib.TOMLDecodeError) -> ConfigProblem:
    message = str(exc)
    found = _TOML_POSITION.search(message)
    if found is None:
        return ConfigProblem(None, message)  # "(at end of document)": no line to point at
    return ConfigProblem(int(found.group(1)), message[: found.start()])


# --- checking ---------------------------------------------------------------------------------------


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


def _quote(name: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _looks_like_a_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in ("key", "token", "secret", "password"))


class _Check:
    """Walks the parsed TOML, collecting every problem with the line it is on.

    Messages name keys and types but never repeat a value that could be a secret.
    """

    def __init__(self, locator: _Locator) -> None:
        self.locator = locator
        self.problems: list[ConfigProblem] = []

    def problem(self, at: tuple[str, ...], message: str) -> None:
        self.problems.append(ConfigProblem(self.locator.line(at), message))

    def config(self, raw: dict[str, Any], path: str) -> Config | None:
        for key in raw:
            if key not in _TOP_KEYS:
                self.problem((key,), f"unknown top-level key {key!r}{_suggestion(key, _TOP_KEYS)}")
        provider_tables = self.tables(raw, "providers")
        model_tables = self.tables(raw, "models")
        providers: dict[str, ProviderConfig] = {}
        for name, table in provider_tables.items():
            provider = self.provider(name, table)
            if provider is not None:
                providers[name] = provider
        models: dict[str, ModelConfig] = {}
        for alias, table in model_tables.items():
            model = self.model(alias, table, provider_tables)
            if model is not None:
                models[alias] = model
        default = raw.get("default_model")
        if default is None:
            return Config(providers, models, FALLBACK_MODEL, default_is_fallback=True, source=path)
        if not isinstance(default, str):
            self.problem(("default_model",), f"default_model must be a string, not {_type_name(default)}")
            return None
        # Names are checked against every table, valid or not: a broken provider is reported once, as itself.
        if not _names_a_model(default, model_tables, provider_tables):
            self.problem(
                ("default_model",),
                f"default_model {default!r} names no model: it is not an alias, a built-in"
                f" ({', '.join(BUILTIN_MODELS)}) or provider/model with a defined provider",
            )
            return None
        return Config(providers, models, default, default_is_fallback=False, source=path)

    def tables(self, raw: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
        value = raw.get(section, {})
        if not isinstance(value, dict):
            self.problem((section,), f"{section} must be a table of [{section}.NAME] tables, not {_type_name(value)}")
            return {}
        tables: dict[str, dict[str, Any]] = {}
        for name, table in value.items():
            if isinstance(table, dict):
                tables[name] = table
            else:
                self.problem((section, name), f"{section}.{_quote(name)} must be a table, not {_type_name(table)}")
        return tables

    def unknown_keys(self, table: dict[str, Any], known: tuple[str, ...], at: tuple[str, ...], label: str) -> None:
        for key in table:
            if key in known:
                continue
            message = f"{label} has unknown key {key!r}{_suggestion(key, known)}"
            if "api_key_env" in known and _looks_like_a_secret_key(key):
                message += "; api_key_env names the environment variable holding the key, never the key itself"
            self.problem(at + (key,), message)

    def string(self, table: dict[str, Any], key: str, at: tuple[str, ...], label: str) -> str | None:
        value = table.get(key)
        if value is None or isinstance(value, str):
            return value
        self.problem(at + (key,), f"{label} {key} must be a string, not {_type_name(value)}")
        return None

    def integer(self, table: dict[str, Any], key: str, at: tuple[str, ...], label: str, minimum: int) -> int | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(at + (key,), f"{label} {key} must be an integer, not {_type_name(value)}")
            return None
        if value < minimum:
            self.problem(at + (key,), f"{label} {key} must be at least {minimum}, not {value}")
            return None
        return value

    def require(self, table: dict[str, Any], keys: tuple[str, ...], at: tuple[str, ...], label: str) -> None:
        missing = [key for key in keys if key not in table]
        if missing:
            self.problem(at, f"{label} is missing {' and '.join(missing)}")

    def provider(self, name: str, table: dict[str, Any]) -> ProviderConfig | None:
        at = ("providers", name)
        label = f"[providers.{_quote(name)}]"
        before = len(self.problems)
        if not name or "/" in name:
            self.problem(
                at, f"{label} is not a usable name: it must be non-empty and without '/' (models are provider/model)"
            )
        self.unknown_keys(table, _PROVIDER_KEYS, at, label)
        self.require(table, ("type", "base_url"), at, label)

        kind = self.string(table, "type", at, label)
        if kind is not None and kind not in PROVIDER_TYPES:
            self.problem(at + ("type",), f"{label} type must be 'openai' or 'anthropic', not {kind!r}")
        base_url = self.string(table, "base_url", at, label)
        if base_url is not None and (trouble := _url_problem(base_url)) is not None:
            self.problem(at + ("base_url",), f"{label} base_url {trouble}")
        key_env = self.string(table, "api_key_env", at, label)
        if key_env is not None and not _ENV_NAME.fullmatch(key_env):
            # Most likely the key itself was pasted here: say so without repeating it.
            self.problem(
                at + ("api_key_env",),
                f"{label} api_key_env must be the NAME of an environment variable (letters, digits, _),"
                " not the key itself",
            )
        if kind == "anthropic" and "api_key_env" not in table:
            self.problem(at, f"{label} needs api_key_env: Anthropic's API requires a key")
        headers = self.headers(table, at, label)
        retries = self.integer(table, "max_retries", at, label, minimum=0)
        idle_timeout = self.seconds(table, "idle_timeout", at, label)

        if len(self.problems) > before or kind is None or base_url is None:
            return None
        return ProviderConfig(
            name=name,
            type=kind,
            base_url=base_url.rstrip("/"),
            api_key_env=key_env,
            headers=headers,
            max_retries=DEFAULT_MAX_RETRIES if retries is None else retries,
            idle_timeout=DEFAULT_IDLE_TIMEOUT if idle_timeout is None else idle_timeout,
        )

    def headers(self, table: dict[str, Any], at: tuple[str, ...], label: str) -> dict[str, str]:
        value = table.get("headers", {})
        if not isinstance(value, dict):
            self.problem(at + ("headers",), f"{label} headers must be a table, not {_type_name(value)}")
            return {}
        for header, text in value.items():
            if not isinstance(text, str):
                self.problem(
                    at + ("headers", header),
                    f"{label} headers.{_quote(header)} must be a string, not {_type_name(text)}",
                )
        return {header: text for header, text in value.items() if isinstance(text, str)}

    def seconds(self, table: dict[str, Any], key: str, at: tuple[str, ...], label: str) -> float | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(at + (key,), f"{label} {key} must be a number of seconds, not {_type_name(value)}")
            return None
        if not (math.isfinite(value) and value > 0):
            self.problem(at + (key,), f"{label} {key} must be a positive number of seconds, not {value}")
            return None
        return float(value)

    def model(self, alias: str, table: dict[str, Any], providers: Collection[str]) -> ModelConfig | None:
        at = ("models", alias)
        label = f"[models.{_quote(alias)}]"
        before = len(self.problems)
        if not alias or "/" in alias:
            self.problem(
                at, f"{label} is not a usable alias: it must be non-empty and without '/' (models are provider/model)"
            )
        elif alias in BUILTIN_MODELS:
            self.problem(at, f"{label} cannot be an alias: {alias!r} is a built-in model")
        self.unknown_keys(table, _MODEL_KEYS, at, label)
        self.require(table, ("provider", "model"), at, label)

        provider = self.string(table, "provider", at, label)
        if provider is not None and provider not in providers:
            defined = ", ".join(providers) if providers else "none"
            self.problem(
                at + ("provider",),
                f"{label} provider {provider!r} is not defined (defined providers: {defined})",
            )
        model = self.string(table, "model", at, label)
        if model == "":
            self.problem(at + ("model",), f"{label} model must not be empty")
        context_window = self.integer(table, "context_window", at, label, minimum=1)
        max_output = self.integer(table, "max_output_tokens", at, label, minimum=1)
        if context_window is not None and max_output is not None and max_output > context_window:
            self.problem(
                at + ("max_output_tokens",),
                f"{label} max_output_tokens ({max_output}) is larger than context_window ({context_window})",
            )

        if len(self.problems) > before or provider is None or not model:
            return None
        return ModelConfig(alias, provider, model, context_window, max_output)


def _suggestion(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
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

    def _note(self, path: tuple[str, ...], number: int) -> None:
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], number)

    def line(self, path: tuple[str, ...]) -> int | None:
        """The line of `path`, else of the nearest enclosing [providers.X] or [models.X] table."""
        for end in range(len(path), min(len(path), 2) - 1, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None


def _key_path(dotted: str) -> tuple[str, ...]:
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
