"""WebRTC calls, OpenAI's browser transport: `POST /v1/realtime/calls` and its hangup.

Two ways in, as OpenAI's: a browser posts its SDP offer as the body (`Content-Type:
application/sdp`) with an ephemeral `ek_` secret (or an API key) as Bearer, and the call runs the
session the secret was minted with; or an app's backend posts `multipart/form-data` with `sdp` and
`session` (the client-secret session shape) with its API key, and hands the answer to the browser.
`?model=` asks for a conversation session, as on the WebSocket. The answer is `201` with the SDP
answer and `Location: /v1/realtime/calls/{call_id}`; the events then travel on the `oai-events`
data channel (`server.realtime.webrtc.calls`).
"""

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import UploadFile

from server.api.access import require_realtime_key
from server.api.realtime_sessions import openai_protocol, secret_config, validated_session
from server.api.services import services_of
from server.core.auth import Identity
from server.core.errors import APIError

router = APIRouter()

MAX_OFFER_BYTES = 65_536  # a browser's offer is a few kB
_OFFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/sdp": {"schema": {"type": "string", "description": "The SDP offer."}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["sdp"],
                    "properties": {
                        "sdp": {"type": "string", "description": "The SDP offer."},
                        "session": {"type": "string", "description": "The session (JSON), as for client secrets."},
                    },
                }
            },
        },
    }
}


@router.post(
    "/v1/realtime/calls",
    status_code=201,
    response_class=Response,
    openapi_extra=_OFFER_BODY,
    responses={201: {"content": {"application/sdp": {}}, "description": "The SDP answer."}},
)
async def create_call(request: Request, identity: Annotated[Identity, Depends(require_realtime_key)]) -> Response:
    """Answer a WebRTC offer and start the call's realtime session."""
    services = services_of(request)
    offer, session = await _offer(request)
    initial = await validated_session(services, "ga", session) if session is not None else secret_config(identity)
    protocol = await openai_protocol(
        services,
        identity,
        initial,
        model=request.query_params.get("model"),
        transcription_intent=request.query_params.get("intent") == "transcription",
    )
    peer = f"{request.client.host}:{request.client.port}" if request.client else "?"
    answer = await services.calls.answer(offer, protocol, identity, peer, services.realtime)
    return Response(
        answer.sdp,
        status_code=201,
        media_type="application/sdp",
        headers={"Location": f"/v1/realtime/calls/{answer.call_id}"},
    )


@router.post("/v1/realtime/calls/{call_id}/hangup", response_class=Response)
async def hangup_call(
    call_id: str, request: Request, identity: Annotated[Identity, Depends(require_realtime_key)]
) -> Response:
    """End a call of this key."""
    if not services_of(request).calls.hangup(call_id, identity):
        raise APIError(404, f"No call with id '{call_id}'.", param="call_id", code="call_not_found")
    return Response(status_code=200)


async def _offer(request: Request) -> tuple[str, dict[str, Any] | None]:
    """The SDP offer, and the `session` a multipart request brings."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/sdp":
        body = await request.body()
        if len(body) > MAX_OFFER_BYTES:
            raise _too_large()
        return _text(body, "sdp"), None
    if content_type != "multipart/form-data":
        raise APIError(
            415,
            "Send the SDP offer as the body (Content-Type: application/sdp), or as the `sdp` field "
            "of a multipart/form-data body with an optional `session`.",
            param="Content-Type",
            code="unsupported_media_type",
        )
    async with request.form(max_files=2, max_fields=2, max_part_size=MAX_OFFER_BYTES) as form:
        sdp = await _field(form.get("sdp"), "sdp")
        session_text = await _field(form.get("session"), "session")
    if sdp is None:
        raise APIError(400, "The multipart body has no `sdp` field.", param="sdp", code="missing_required_parameter")
    if session_text is None:
        return sdp, None
    try:
        session = json.loads(session_text)
    except json.JSONDecodeError as exc:
        raise APIError(400, f"`session` is not JSON: {exc}.", param="session", code="invalid_json") from None
    if not isinstance(session, dict):
        raise APIError(400, "`session` must be a JSON object.", param="session", code="invalid_type")
    return sdp, session


async def _field(value: str | UploadFile | None, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    data = await value.read(MAX_OFFER_BYTES + 1)
    if len(data) > MAX_OFFER_BYTES:
        raise _too_large()
    return _text(data, name)


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise APIError(400, f"`{name}` is not UTF-8 text.", param=name, code="invalid_offer") from None


def _too_large() -> APIError:
    return APIError(
        413, f"The SDP offer is larger than {MAX_OFFER_BYTES} bytes.", param="sdp", code="request_too_large"
    )
