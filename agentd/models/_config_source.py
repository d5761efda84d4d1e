"""Where the model configuration comes from: config.toml, else the environment; AGENTD_MODEL or --model over either.

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

    [agent]
    mcp_wait = 2                            # optional: seconds a run's first turn waits for MCP servers (0: none)

    [mcp.notes]                             # an MCP server; its tools reach the model as mcp__notes__TOOL
    command = ["uvx", "mcp-server-sqlite", "--db-path", "notes.db"]   # stdio: the program, then its arguments
    env = { NOTES_TOKEN = "..." }           # optional, stdio only: added to the server's small clean environment
    allow = ["list_tables"]                 # optional: its tools (MCP names) that run without asking; "*": all
    enabled = true                          # optional
    startup_timeout = 30                    # optional: seconds to start and list its tools
    call_timeout = 120                      # optional: seconds one tool call may take

    [mcp.docs]
    url = "https://docs.example.com/mcp"    # streamable HTTP, instead of command
    headers = { Authorization = "Bearer ..." }   # optional, HTTP only

A project's own `.agentd/config.toml` may hold `[mcp.NAME]` tables too, and
nothing else (`_project_file`); its servers start once the user trusted it.

With no file, the environment decides: `OPENAI_API_KEY` (and `OPENAI_BASE_URL`)
gives provider `openai`, `ANTHROPIC_API_KEY` (and `ANTHROPIC_BASE_URL`) gives
`anthropic`, `OLLAMA_HOST` gives `ollama`, an openai-type provider with no key.
The default is then `openai/gpt-4.1`, else `anthropic/claude-sonnet-4-5`, else
`echo`: Ollama's model names are whatever was pulled locally, so none can be
assumed. When a file exists the environment adds no providers: what runs is
what the file says.

Over either, `agentd --model NAME`, else `AGENTD_MODEL`, chooses the default.

A running daemon reads the file again when it changes (`ConfigFile`).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import attrs

from ._config import (
    BUILTIN_MODELS,
    DEFAULT_MODEL_VARIABLE,
    FALLBACK_MODEL,
    Config,
    ConfigError,
    ConfigProblem,
    ProviderConfig,
)
from ._config_file import from_file, url_problem

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ConfigFile", "config_path", "load_config"]

log = logging.getLogger("agentd.models")

OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
OLLAMA_PORT = "11434"
OPENAI_DEFAULT_MODEL = "openai/gpt-4.1"
ANTHROPIC_DEFAULT_MODEL = "anthropic/claude-sonnet-4-5"


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def config_path(environ: Mapping[str, str] | None = None) -> str:
    """`$XDG_CONFIG_HOME/agentd/config.toml`, else `~/.config/agentd/config.toml`."""
    env = _env(environ)
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "agentd", "config.toml")


def load_config(
    path: str | None = None, environ: Mapping[str, str] | None = None, default_model: str | None = None
) -> Config:
    """The file at `path` (default: `config_path()`) if it exists, else what the environment offers.

    `default_model` (agentd's --model), else the environment's AGENTD_MODEL,
    chooses the default. A file is checked whole: ConfigError lists every
    problem found, not the first.
    """
    env = _env(environ)
    config = _read(path or config_path(env), env)
    return _with_default(config, _chosen_default(env, default_model))


def _read(path: str, env: Mapping[str, str]) -> Config:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return _from_environment(env)
    except OSError as exc:
        raise ConfigError([ConfigProblem(None, f"cannot read the configuration: {exc.strerror}")], path) from None
    return from_file(data, path)


def _chosen_default(env: Mapping[str, str], flag: str | None) -> tuple[str, str] | None:
    """The default model a flag or the environment chooses, and which of them chose it."""
    if flag:
        return flag, "--model"
    chosen = env.get(DEFAULT_MODEL_VARIABLE)
    return (chosen, DEFAULT_MODEL_VARIABLE) if chosen else None


def _with_default(config: Config, chosen: tuple[str, str] | None) -> Config:
    if chosen is None:
        return config
    name, origin = chosen
    if not config.names_a_model(name):
        message = f"{origin} {name!r} names no model (available: {config.available()})"
        raise ConfigError([ConfigProblem(None, message)])
    return attrs.evolve(config, default_model=name, default_is_fallback=False)


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
        ConfigProblem(None, f"environment variable {variable}: the provider URL {provider.url} {trouble}")
        for provider, variable in (
            (providers.get("openai"), "OPENAI_BASE_URL"),
            (providers.get("anthropic"), "ANTHROPIC_BASE_URL"),
            (providers.get("ollama"), "OLLAMA_HOST"),
        )
        if provider is not None and (trouble := url_problem(provider.base_url)) is not None
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


class ConfigFile:
    """The configuration as the file says now: read again whenever the file changes.

    A daemon lives for days, and whoever edits config.toml expects the next
    run to use it. Each use costs a stat of the file. Mistakes never stop the
    daemon: they are logged and kept in `mistakes`, and the last good
    configuration stays in use, or, when there has been none, only the
    built-in models (with no default: a run must name one). The environment
    is read once, at start.
    """

    def __init__(
        self, path: str | None = None, environ: Mapping[str, str] | None = None, default_model: str | None = None
    ) -> None:
        self._env = dict(_env(environ))
        self.path = path or config_path(self._env)
        self._chosen = _chosen_default(self._env, default_model)
        self._good: Config | None = None  # the last configuration read without mistakes
        self._unreadable = False  # the file (or the environment) has mistakes now
        self.mistakes: list[str] = []  # one `path:LINE: reason` each
        self._stamp = self._stat()
        self.config = self._read()
        if self.mistakes:
            log.warning("%s", self.mistakes_note())

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> Config:
        stamp = self._stat()
        if stamp != self._stamp:
            self._reread(stamp)
        return self.config

    def reload(self) -> None:
        """Read the file now, changed or not (SIGHUP)."""
        self._reread(self._stat())

    def _reread(self, stamp: tuple[int, int, int] | None) -> None:
        # Stat taken before reading: a write after this read changes it again, and is read next time.
        self._stamp = stamp
        self.config = self._read()
        if not self.mistakes:
            log.info("read the configuration again (%s): default model %s", self.path, self.config.default_model)
        elif self._unreadable and self._good is not None:
            log.warning("%s has mistakes; still using the configuration from before:\n%s", self.path, self._lines())
        else:
            log.warning("%s", self.mistakes_note())

    def _read(self) -> Config:
        """The configuration to use now; sets `mistakes`."""
        self.mistakes = []
        source = self.path
        try:
            self._good = _read(self.path, self._env)
            self._unreadable = False
        except ConfigError as exc:
            self._unreadable = True
            self.mistakes += exc.lines()
            source = exc.path or "environment"
        base = self._good or Config({}, {}, None, default_is_fallback=False, source=source)
        try:
            return _with_default(base, self._chosen)
        except ConfigError as exc:
            if self._good is not None:  # with nothing good read, its names cannot be checked: no new mistake
                self.mistakes += exc.lines()
            return attrs.evolve(base, default_model=None, default_is_fallback=False)

    def _lines(self) -> str:
        return "\n".join(self.mistakes)

    def mistakes_note(self) -> str | None:
        """What the mistakes mean for the runs, and each of them; None when there are none."""
        if not self.mistakes:
            return None
        if self._good is None:
            head = (
                f"the model configuration has mistakes, so only the built-in models ({', '.join(BUILTIN_MODELS)})"
                " can run until they are fixed (agentd --check-config checks it again):"
            )
        elif self._unreadable:
            head = (
                "the configuration file changed but has mistakes, so what it said before is in use"
                " (see agentd --check-config):"
            )
        else:
            head = "the model configuration has a mistake:"
        return f"{head}\n{self._lines()}"

    def default_note(self) -> str | None:
        """What a user should be told before a run with the default, when nothing chose it; else None."""
        return self.config.default_note(self.path)
