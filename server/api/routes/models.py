"""The model listing: vLLM's served model plus the aliases that map to it."""

import time
from typing import Any

from fastapi import APIRouter, Request

from server.api.services import services_of

router = APIRouter()


def _alias_entry(alias: str, served: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": int(time.time()), "owned_by": "voxtral-edge", "root": served}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """vLLM's models, plus the aliases that map to the served one."""
    services = services_of(request)
    listing = await services.backend.models()
    served = await services.models.served()
    listing["data"] = list(listing.get("data") or []) + [
        _alias_entry(a, served) for a in sorted(services.models.aliases)
    ]
    return listing


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    services = services_of(request)
    served = await services.models.resolve(model_id)
    for entry in (await services.backend.models()).get("data") or []:
        if entry.get("id") == model_id:
            return entry
    return _alias_entry(model_id, served)
