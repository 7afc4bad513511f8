"""Service routes, open to all: liveness, readiness, and Prometheus metrics (a key with `METRICS_REQUIRE_KEY`)."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.api.access import metrics_access
from server.api.services import services_of
from server.backend.readiness import serving
from server.backend.vllm_client import RETRY_AFTER_S, BackendAuthFailed
from server.core import metrics
from server.core.errors import APIError

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """The edge process is alive (says nothing about vLLM; see /ready)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 when vLLM serves the model and the warm-up is done; 503 (with Retry-After) otherwise.

    vLLM refusing the edge's key is no wait: that 503 carries the error in OpenAI's shape
    (`backend_auth_failed`) and no Retry-After.
    """
    services = services_of(request)
    try:
        served = await serving(services.backend, services.models)
    except BackendAuthFailed as exc:
        return JSONResponse({"status": "unavailable", "reason": exc.message, **exc.body()}, status_code=503)
    except APIError as exc:
        return JSONResponse(
            {"status": "unavailable", "reason": exc.message}, status_code=503, headers={"Retry-After": RETRY_AFTER_S}
        )
    if not services.warmup.done:
        reason = f"warming vLLM up ({services.warmup.requests} requests of each kind the edge sends)"
        return JSONResponse(
            {"status": "warming_up", "reason": reason}, status_code=503, headers={"Retry-After": RETRY_AFTER_S}
        )
    return JSONResponse({"status": "ready", "model": served})


@router.get("/metrics", dependencies=[Depends(metrics_access)])
async def prometheus_metrics(request: Request) -> Response:
    """The edge's metrics: with several workers, all of them merged into one."""
    body = metrics.exposition(services_of(request).settings.prometheus_multiproc_dir)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
