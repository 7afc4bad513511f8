"""Whether vLLM serves the edge's model: what `/ready` checks, and what the warm-up waits for."""

from server.backend.model_names import ModelNames
from server.backend.vllm_client import RETRY_AFTER_S, VLLMClient
from server.core.errors import APIError


async def serving(backend: VLLMClient, models: ModelNames) -> str:
    """The served model's name, once vLLM lists it.

    Raises `APIError`: `BackendAuthFailed` when vLLM refuses the edge's key, a 503 with
    `Retry-After` when it is unreachable or lists other models.
    """
    listing = await backend.models()
    served = await models.served()
    ids = [m.get("id") for m in listing.get("data") or []]
    if served not in ids:
        raise APIError(
            503,
            f"vLLM does not serve {served!r} (it serves {ids})",
            code="model_not_served",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    return served
