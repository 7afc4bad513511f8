"""Which model names clients may send, and the one vLLM actually serves."""

from server.backend.vllm_client import VLLMClient
from server.core.errors import APIError
from server.core.settings import Settings


class ModelNames:
    """Maps a requested model (empty, the served name, or an alias) to vLLM's served name."""

    def __init__(self, settings: Settings, backend: VLLMClient) -> None:
        self.aliases = settings.model_alias_set
        self._backend = backend
        self._served = settings.served_model_name

    async def served(self) -> str:
        """The served model name; asked of vLLM once when not configured."""
        if self._served is None:
            listing = await self._backend.models()
            models = listing.get("data") or []
            if not models:
                raise APIError(
                    503,
                    "The speech backend serves no model yet.",
                    code="backend_unavailable",
                    headers={"Retry-After": "5"},
                )
            self._served = models[0]["id"]
        return self._served

    async def resolve(self, requested: str | None) -> str:
        served = await self.served()
        if not requested or requested == served or requested in self.aliases:
            return served
        raise APIError(
            404,
            f"The model `{requested}` does not exist. Use `{served}` or one of: {', '.join(sorted(self.aliases))}.",
            param="model",
            code="model_not_found",
        )
