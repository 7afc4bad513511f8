"""WebSocket routes of realtime sessions: OpenAI's `/v1/realtime` (GA and beta) and the simple `/ws`.

A GA connection with `?model=` (as the SDKs open one) starts a conversation session, with
`intent=transcription` a transcription session, as does one without either (then `session.update`
picks). Beta is chosen by the `OpenAI-Beta: realtime=v1` header, or by the `openai-beta.realtime-v1`
subprotocol that browsers send since they cannot set headers; browsers also offer the `realtime`
subprotocol, which is accepted (and must be, when they send their key as the subprotocol
`openai-insecure-api-key.<key>`: a browser fails a handshake that selects none).

The key is checked before the handshake is accepted; a refused key gets HTTP 403 and no session.
An ephemeral secret starts its session with the config it was minted with.
"""

import logging

from fastapi import APIRouter, WebSocket

from server.api.access import authenticate_socket
from server.api.realtime_sessions import openai_protocol, secret_config
from server.api.services import services_of
from server.core.errors import APIError
from server.realtime.protocols.simple import SimpleProtocol
from server.realtime.transports.websocket import serve_connection

router = APIRouter()
log = logging.getLogger("edge.auth")


@router.websocket("/v1/realtime")
async def openai_realtime(websocket: WebSocket) -> None:
    identity = await authenticate_socket(websocket)
    if identity is None:
        return
    offered = websocket.scope.get("subprotocols") or []
    beta = "realtime=v1" in websocket.headers.get("openai-beta", "") or "openai-beta.realtime-v1" in offered
    services = services_of(websocket)
    try:
        initial = secret_config(identity)
    except APIError as exc:  # minted by an edge that validated differently: refuse rather than guess
        log.warning("refused a realtime handshake: its ephemeral secret's session is invalid: %s", exc.message)
        await websocket.close(code=1008)
        return
    protocol = await openai_protocol(
        services,
        identity,
        initial,
        beta=beta,
        model=websocket.query_params.get("model"),
        transcription_intent=websocket.query_params.get("intent") == "transcription",
    )
    await serve_connection(
        websocket, protocol, services.realtime, identity, "realtime" if "realtime" in offered else None
    )


@router.websocket("/ws")
async def simple_realtime(websocket: WebSocket) -> None:
    identity = await authenticate_socket(websocket)
    if identity is None:
        return
    offered = websocket.scope.get("subprotocols") or []
    services = services_of(websocket)
    await serve_connection(
        websocket, SimpleProtocol(), services.realtime, identity, "realtime" if "realtime" in offered else None
    )
