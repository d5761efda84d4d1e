"""Model names to models: the one place a run's model is resolved.

Names come from the configuration (`agentd.config`): the built-in `echo` and
`scripted`, an alias, or `provider/model`. Models of a real provider share that
provider's HTTP client, one per provider for the daemon's life.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from ._base import Model
from ._echo import EchoModel
from ._scripted import ScriptedModel

if TYPE_CHECKING:
    # agentd.config imports this package's _base: a module-level import here
    # would be a cycle.
    from agentd.config import Config

__all__ = ["DEFAULT_MODEL", "ModelRegistry"]

DEFAULT_MODEL = "echo"


class ModelRegistry:
    def __init__(self, config: Config | None = None) -> None:
        if config is None:
            from agentd.config import Config

            config = Config(providers={}, models={})
        self.config = config
        self._builtins: dict[str, Model] = {m.name: m for m in (EchoModel(), ScriptedModel())}
        self._clients: dict[str, Any] = {}
        self._exit_stack = AsyncExitStack()

    @property
    def default(self) -> str:
        return self.config.default_model

    async def aclose(self) -> None:
        """Close the providers' HTTP clients."""
        await self._exit_stack.aclose()
        self._clients.clear()

    async def _client(self, provider: str) -> Any:
        client = self._clients.get(provider)
        if client is None:
            from ._http import open_http_client  # only a daemon with a real provider loads httpx2

            client = await self._exit_stack.enter_async_context(open_http_client())
            self._clients[provider] = client
        return client

    async def resolve(self, name: str | None) -> Model:
        """The model `name` (None: the default); UnknownModelError names what there is."""
        resolved = self.config.resolve(name)
        if resolved.provider is None:
            return self._builtins[resolved.model]
        from ._http import HttpModel

        return HttpModel(
            resolved.provider,
            resolved.model,
            await self._client(resolved.provider.name),
            max_output_tokens=resolved.max_output_tokens,
        )
