"""What a model configuration is: providers, aliases, the default, and what a name resolves to.

Where it comes from (config.toml, the environment, AGENTD_MODEL) is `_config_source`;
how the file is checked is `_config_file`. A model is named by an alias, as
`provider/model` (split at the first `/`, so `ollama/library/qwen` is model
`library/qwen`), or as a built-in: `echo`, `scripted`.

Keys are never read into a config: a provider holds the name of the variable,
and `ProviderConfig.api_key()` reads it when a request is about to be made.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import TYPE_CHECKING

import attrs

from agentd.mcp import DEFAULT_MCP_WAIT, McpServerConfig
from agentd.permissions import PermissionSettings

from ._base import UnknownModelError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MAX_STEPS",
    "AgentSettings",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "ModelConfig",
    "ProviderConfig",
    "ResolvedModel",
]

BUILTIN_MODELS = ("echo", "scripted")
FALLBACK_MODEL = "echo"
PROVIDER_TYPES = ("openai", "anthropic")

DEFAULT_MAX_RETRIES = 3
DEFAULT_IDLE_TIMEOUT = 60.0
# Model turns a run may take before it ends with stop_reason "step_limit".
DEFAULT_MAX_STEPS = 50

# The providers the environment can offer, and the variable that offers each.
ENVIRONMENT_PROVIDERS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "ollama": "OLLAMA_HOST"}
# Chooses the default model for every run, over the file's default_model and the environment's.
DEFAULT_MODEL_VARIABLE = "AGENTD_MODEL"

# A daemon reads its environment once: a variable exported in a shell afterwards never reaches it.
# A variable exported after the daemon started is never seen: say where the
# daemon's environment comes from, for a daemon agentctl started and for a service.
KEPT_ENVIRONMENT = (
    "agentd keeps the environment it started with: run `agentctl stop`, and the next agentctl command"
    " starts agentd with the environment it has; a systemd user service takes its environment from"
    " ~/.config/environment.d/*.conf or `systemctl --user import-environment NAME`, then `agentctl restart`"
    ' (README, "Environment and API keys")'
)


@attrs.frozen
class ConfigProblem:
    line: int | None
    message: str


class ConfigError(Exception):
    """Everything wrong with a configuration at once, one `path:LINE: message` per line."""

    def __init__(self, problems: list[ConfigProblem], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [_render(problem, self.path) for problem in self.problems]


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
        value = (os.environ if environ is None else environ).get(self.api_key_env)
        if not value:
            state = "is not set" if value is None else "is empty"
            message = (
                f"provider {self.name!r} needs an API key, but environment variable {self.api_key_env} {state}"
                f" in agentd's environment; {KEPT_ENVIRONMENT}"
            )
            raise ConfigError([ConfigProblem(None, message)])
        return value

    @property
    def url(self) -> str:
        """`base_url` without its userinfo: what requests go to, and what every message shows."""
        return _split_userinfo(self.base_url)[0]

    @property
    def url_credentials(self) -> tuple[str, str] | None:
        """The user and password written in `base_url` (`https://user:pass@host`), sent as Basic auth; None if none."""
        userinfo = _split_userinfo(self.base_url)[1]
        if userinfo is None:
            return None
        user, _, password = userinfo.partition(":")
        return urllib.parse.unquote(user), urllib.parse.unquote(password)

    def secrets(self, key: str | None) -> dict[str, str]:
        """Each value a message must never show, with what to show instead.

        The key; every header value from the configuration (a proxy's token, an
        `X-Api-Key`: secret unless proven otherwise); the userinfo of base_url,
        its parts and its Basic-auth form, which a provider may echo back. Values
        under `_SHORTEST_SECRET` characters are no credential, and replacing them
        would garble every message they happen to occur in.
        """
        found: dict[str, str] = {}
        for name, value in self.headers.items():
            found[value] = f"[header {name}]"
        userinfo = _split_userinfo(self.base_url)[1]
        credentials = self.url_credentials
        if userinfo is not None and credentials is not None:
            user, password = credentials
            if not password:
                # `https://KEY@host`: the user is the credential. Beside a password it is a name.
                found[user] = found[urllib.parse.quote(user, safe="")] = "[URL user]"
            found[password] = found[urllib.parse.quote(password, safe="")] = "[URL password]"
            found[userinfo] = "[URL credentials]"
            found[basic_token(user, password)] = "[URL credentials]"
        if key:
            found[key] = "[API key]"
        return {value: label for value, label in found.items() if len(value) >= _SHORTEST_SECRET}

    @property
    def max_tokens_field(self) -> str:
        """The request field that caps an answer's length.

        OpenAI itself has deprecated `max_tokens` for `max_completion_tokens`
        (its reasoning models refuse the old name), while the servers that
        copy its API (Ollama, llama.cpp, LM Studio) know only `max_tokens`.
        """
        if self.type == "openai" and urllib.parse.urlsplit(self.url).hostname == "api.openai.com":
            return "max_completion_tokens"
        return "max_tokens"


_SHORTEST_SECRET = 4


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """(`url` without `user:pass@`, that userinfo or None)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at:
        return url, None
    return f"{scheme}://{host}{slash}{path}", userinfo


def basic_token(user: str, password: str) -> str:
    """Basic auth's form of a user and password (RFC 7617): what follows `Authorization: Basic`."""
    import base64

    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


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
class AgentSettings:
    """`[agent]`: how the agent loop runs."""

    max_steps: int = DEFAULT_MAX_STEPS
    # Seconds a run's first model turn waits for MCP servers still starting (then it goes on without them).
    mcp_wait: float = DEFAULT_MCP_WAIT


@attrs.frozen
class Config:
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]  # by alias
    # None: no default is known (the configuration has mistakes), so a run must name its model.
    default_model: str | None = FALLBACK_MODEL
    default_is_fallback: bool = True  # nothing chose the default: `echo`, because no real model is configured
    source: str = "environment"  # or the file's path
    # `[permissions]` and `[agent]`: the defaults when there is no file (or it says nothing).
    permissions: PermissionSettings = PermissionSettings()
    agent: AgentSettings = AgentSettings()
    # `[mcp.NAME]` tables, in the file's order.
    mcp: tuple[McpServerConfig, ...] = ()

    def resolve(self, name: str | None) -> ResolvedModel:
        """The model `name` means (None: the default); UnknownModelError says what exists instead."""
        key = name or self.default_model
        if key is None:
            raise UnknownModelError(f"no model named, and no default model is known (available: {self.available()})")
        if key in BUILTIN_MODELS:
            return ResolvedModel(provider=None, model=key)
        alias = self.models.get(key)
        if alias is not None:
            return ResolvedModel(self.providers[alias.provider], alias.model, key, alias.max_output_tokens)
        provider, model = split_name(key)
        if provider in self.providers and model:
            return ResolvedModel(self.providers[provider], model)
        message = f"unknown model {key!r} (available: {self.available()})"
        variable = ENVIRONMENT_PROVIDERS.get(provider)
        if self.source == "environment" and variable is not None and model:
            # Most likely exported in a shell after the daemon started.
            message += f"; provider {provider!r} comes from {variable}, which agentd's environment does not have"
            message += f": {KEPT_ENVIRONMENT}"
        raise UnknownModelError(message)

    def available(self) -> str:
        groups = [", ".join(BUILTIN_MODELS)]
        if self.models:
            groups.append("aliases: " + ", ".join(self.models))
        if self.providers:
            groups.append("providers: " + ", ".join(f"{name}/<model>" for name in self.providers))
        return "; ".join(groups)

    def key_variables(self) -> frozenset[str]:
        """The environment variables that hold a provider's key: no tool's process is given them.

        The configured providers' `api_key_env`, and the variables the
        environment offers providers by, whether or not a provider uses them now.
        """
        names = {provider.api_key_env for provider in self.providers.values() if provider.api_key_env}
        names.update(variable for variable in ENVIRONMENT_PROVIDERS.values() if variable.endswith("_KEY"))
        return frozenset(names)

    def tool_secrets(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Each credential value a tool's result must not carry, with what to show instead.

        A tool's process lacks the key variables, but a model can still find a
        key elsewhere (`/proc/PPID/environ`, a `.env` file): every provider's
        secrets, and the value of every key variable, are taken out of results.
        """
        found: dict[str, str] = {}
        for name in self.key_variables():
            value = environ.get(name, "")
            if len(value) >= _SHORTEST_SECRET:
                found[value] = f"[{name}]"
        for provider in self.providers.values():
            key = environ.get(provider.api_key_env) if provider.api_key_env else None
            found.update(provider.secrets(key))
        return found

    def names_a_model(self, name: str) -> bool:
        return names_a_model(name, self.models, self.providers)

    def default_note(self, file_path: str) -> str | None:
        """What a user should be told before a run with the default, when nothing chose it; else None.

        `file_path`: where the configuration file would be.
        """
        if not self.default_is_fallback:
            return None
        choose = f"choose one with --model or {DEFAULT_MODEL_VARIABLE} (until then the offline echo model answers)"
        named = [f"{name}/NAME" for name in self.providers] + list(self.models)
        if self.source == "environment" and self.providers:
            variables = [ENVIRONMENT_PROVIDERS[name] for name in self.providers if name in ENVIRONMENT_PROVIDERS]
            verb = "is" if len(variables) == 1 else "are"
            return f"{' and '.join(variables)} {verb} set: models are named {', '.join(named)}; {choose}"
        if self.source != "environment":
            offered = f"models are named {', '.join(named)}; " if named else ""
            return f"{self.source} sets no default_model: {offered}{choose}, or set default_model"
        return (
            "no model is configured, so the offline echo model answers; set OPENAI_API_KEY, ANTHROPIC_API_KEY"
            " or OLLAMA_HOST where agentd starts (it reads its environment once: `agentctl stop` after"
            f" setting one), or write {file_path} (see the README)"
        )

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
        default = self.default_model
        if default is not None and default not in BUILTIN_MODELS and default not in self.models:
            provider, model_id = split_name(default)
            entries.append({"name": default, "kind": "model", "provider": provider, "model": model_id, "default": True})
        for name in self.providers:
            entries.append(
                {"name": f"{name}/<model>", "kind": "provider", "provider": name, "model": None, "default": False}
            )
        return entries


def split_name(name: str) -> tuple[str, str]:
    provider, _, model = name.partition("/")
    return provider, model


def names_a_model(name: str, aliases: Collection[str], providers: Collection[str]) -> bool:
    provider, model = split_name(name)
    return name in BUILTIN_MODELS or name in aliases or (provider in providers and bool(model))
