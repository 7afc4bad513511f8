"""Which model names clients may send, and the one vLLM actually serves."""

from typing import Any

from server.backend.vllm_client import VLLMClient
from server.core.errors import APIError
from server.core.settings import Settings


class ModelNames:
    """Maps a requested model (empty, the served name, or an alias) to vLLM's served name."""

    def __init__(self, settings: Settings, backend: VLLMClient) -> None:
        self.aliases = settings.model_alias_set
        self._backend = backend
        self._served = settings.served_model_name
        self._card: dict[str, Any] | None = None

    async def served(self) -> str:
        """The served model name; asked of vLLM once when not configured."""
        if self._served is None:
            self._served = (await self._model_card())["id"]
        return self._served

    async def context_length(self) -> int | None:
        """The served model's context (`max_model_len` in vLLM's model listing), if it says."""
        length = (await self._model_card()).get("max_model_len")
        return length if isinstance(length, int) and length > 0 else None

    async def _model_card(self) -> dict[str, Any]:
        if self._card is None:
            listing = await self._backend.models()
            models = listing.get("data") or []
            if not models:
                raise APIError(
                    503,
                    "The speech backend serves no model yet.",
                    code="backend_unavailable",
                    headers={"Retry-After": "5"},
                )
            served = self._served or models[0]["id"]
            self._card = next((model for model in models if model.get("id") == served), models[0])
        return self._card

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
