"""Service routes, open to all: liveness, readiness, and Prometheus metrics (a key with `METRICS_REQUIRE_KEY`)."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.api.access import metrics_access
from server.api.services import services_of
from server.backend.vllm_client import BackendAuthFailed
from server.core import metrics
from server.core.errors import APIError

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """The edge process is alive (says nothing about vLLM; see /ready)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 when vLLM answers and serves the model; 503 (with Retry-After) otherwise.

    vLLM refusing the edge's key is no wait: that 503 carries the error in OpenAI's shape
    (`backend_auth_failed`) and no Retry-After.
    """
    services = services_of(request)
    try:
        listing = await services.backend.models()
        served = await services.models.served()
    except BackendAuthFailed as exc:
        return JSONResponse({"status": "unavailable", "reason": exc.message, **exc.body()}, status_code=503)
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


@router.get("/metrics", dependencies=[Depends(metrics_access)])
async def prometheus_metrics(request: Request) -> Response:
    """The edge's metrics: with several workers, all of them merged into one."""
    body = metrics.exposition(services_of(request).settings.prometheus_multiproc_dir)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
