"""Service routes: models, liveness, readiness, Prometheus metrics."""

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server import metrics
from server.errors import APIError
from server.services import services

router = APIRouter()


def _alias_entry(alias: str, served: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": int(time.time()), "owned_by": "voxtral-edge", "root": served}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """vLLM's models, plus the aliases that map to the served one."""
    state = services(request)
    listing = await state.backend.models()
    served = await state.models.served()
    listing["data"] = list(listing.get("data") or []) + [_alias_entry(a, served) for a in sorted(state.models.aliases)]
    return listing


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = services(request)
    served = await state.models.resolve(model_id)
    for entry in (await state.backend.models()).get("data") or []:
        if entry.get("id") == model_id:
            return entry
    return _alias_entry(model_id, served)


@router.get("/health")
async def health() -> dict[str, str]:
    """The edge process is alive (says nothing about vLLM; see /ready)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 when vLLM answers and serves the model; 503 (with Retry-After) otherwise."""
    state = services(request)
    try:
        listing = await state.backend.models()
        served = await state.models.served()
    except APIError as exc:
        return JSONResponse(
            {"status": "unavailable", "reason": exc.message}, status_code=503, headers={"Retry-After": "5"}
        )
    ids = [m.get("id") for m in listing.get("data") or []]
    if served not in ids:
        return JSONResponse(
            {"status": "unavailable", "reason": f"vLLM does not serve {served!r} (it serves {ids})"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ready", "model": served})


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    """The edge's metrics: with several workers, all of them merged into one."""
    body = metrics.exposition(services(request).settings.prometheus_multiproc_dir)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
