"""Model names to models: the one place a run's model is resolved.

Names come from the configuration (`_config`): the built-in `echo` and
`scripted`, an alias, or `provider/model`. Models of a real provider share that
provider's HTTP client, one per provider for the daemon's life.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import AsyncExitStack
from typing import Any

import trio

from ._base import Model, ModelError, UnknownModelError
from ._config import Config, ResolvedModel
from ._config_source import ConfigFile
from ._echo import EchoModel
from ._scripted import ScriptedModel

__all__ = ["DEFAULT_MODEL", "ModelRegistry"]

DEFAULT_MODEL = "echo"

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(self, config: Config | ConfigFile | None = None) -> None:
        """`config`: fixed, or a `ConfigFile` that is read again when it changes."""
        self._file = config if isinstance(config, ConfigFile) else None
        self._fixed = config if isinstance(config, Config) else Config(providers={}, models={})
        self._builtins: dict[str, Model] = {m.name: m for m in (EchoModel(), ScriptedModel())}
        self._clients: dict[str, Any] = {}
        self._building: dict[str, trio.Lock] = {}
        self._exit_stack = AsyncExitStack()

    @property
    def config(self) -> Config:
        """The configuration now."""
        return self._file.current() if self._file is not None else self._fixed

    def reload_config(self) -> None:
        """Read the configuration file again now (it is also read whenever it changes)."""
        if self._file is not None:
            self._file.reload()

    @property
    def default(self) -> str | None:
        return self.config.default_model

    @property
    def mistakes(self) -> list[str]:
        """The configuration's mistakes now, one `path:LINE: reason` each."""
        if self._file is None:
            return []
        self._file.current()
        return list(self._file.mistakes)

    def default_note(self) -> str | None:
        """What to tell a user before a run with the default when nothing chose it; else None."""
        if self._file is None:
            return self._fixed.default_note("config.toml")
        self._file.current()
        return self._file.default_note()

    async def aclose(self) -> None:
        """Close the providers' HTTP clients."""
        await self._exit_stack.aclose()
        self._clients.clear()

    async def prepare(self) -> None:
        """Build each configured provider's HTTP client now, so that its first prompt does not wait for it.

        Importing httpx2 and building a client's TLS context take a few hundred
        milliseconds, the first prompt's whole delay; they are done in a worker
        thread, beside whatever the daemon serves meanwhile.
        """
        for provider in list(self.config.providers):
            try:
                await self._client(provider)
            except Exception as exc:
                # Only a head start: a client that cannot be built (an unusable
                # CA bundle, say) is built again by the provider's next run,
                # which fails with this. The daemon and the other models go on.
                log.warning("%s", exc)

    async def _client(self, provider: str) -> Any:
        client = self._clients.get(provider)
        if client is None:
            # A prompt that comes while prepare() builds this client waits for that one.
            async with self._building.setdefault(provider, trio.Lock()):
                client = self._clients.get(provider)
                if client is None:
                    try:
                        built = await trio.to_thread.run_sync(_build_http_client, abandon_on_cancel=True)
                    except OSError as exc:  # ssl.SSLError is one
                        raise ModelError(_client_failure(provider, exc)) from exc
                    client = await self._exit_stack.enter_async_context(built)
                    self._clients[provider] = client
        return client

    def resolve_name(self, name: str | None) -> ResolvedModel:
        """What `name` means now (None: the default), opening nothing; UnknownModelError names what there is."""
        try:
            return self.config.resolve(name)
        except UnknownModelError as exc:
            note = None if self._file is None else self._file.mistakes_note()
            if note is None:
                raise
            # Likely a name the file defines, in a version of it that did not take.
            raise UnknownModelError(f"{exc}; {note}") from None

    async def resolve(self, name: str | None) -> Model:
        """The model `name` (None: the default); UnknownModelError names what there is."""
        resolved = self.resolve_name(name)
        if resolved.provider is None:
            return self._builtins[resolved.model]
        from ._http import HttpModel

        return HttpModel(
            resolved.provider,
            resolved.model,
            await self._client(resolved.provider.name),
            max_output_tokens=resolved.max_output_tokens,
        )


def _client_failure(provider: str, exc: OSError) -> str:
    """Why provider `provider`'s HTTP client cannot be built: building it reads the CA certificates, nothing else."""
    # An SSLError's text ends with where in CPython it was raised, "(_ssl.c:4154)": nothing for the user.
    what = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", exc.strerror or str(exc))
    where = [f"{name}={os.environ[name]}" for name in ("SSL_CERT_FILE", "SSL_CERT_DIR") if os.environ.get(name)]
    source = f"from {' and '.join(where)} in agentd's environment" if where else "from the system's store"
    return f"provider {provider!r}: cannot load the TLS CA certificates {source}: {what}"


def _build_http_client() -> Any:
    # The first request encodes its host name with the idna codec, whose import is most of what that request costs
    # beyond later ones.
    import encodings.idna  # noqa: F401

    from ._http import open_http_client  # only a daemon with a real provider loads httpx2

    return open_http_client()
