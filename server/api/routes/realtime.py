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
from dataclasses import replace

from fastapi import APIRouter, WebSocket

from server.api.access import authenticate_socket
from server.api.services import Services, services_of
from server.core.auth import Identity
from server.core.errors import APIError
from server.realtime.config import SessionConfig
from server.realtime.protocols.openai import OpenAIProtocol
from server.realtime.protocols.openai_session import parse_beta_session, parse_ga_session
from server.realtime.protocols.simple import SimpleProtocol
from server.realtime.transports.websocket import serve_connection

router = APIRouter()
log = logging.getLogger("edge.auth")


def _initial_config(identity: Identity) -> SessionConfig | None:
    if identity.session is None:
        return None
    parse = parse_beta_session if identity.flavour == "beta" else parse_ga_session
    return parse(identity.session, SessionConfig())


async def _conversation(services: Services, model: str) -> tuple[SessionConfig, tuple[APIError, ...]]:
    """A GA connection with `?model=` (and no `intent=transcription`) opens a conversation
    session, as OpenAI's does; a model not served is said at once, and the served one answers."""
    conversation = SessionConfig(kind="realtime")
    try:
        await services.models.resolve(model)
    except APIError as exc:
        exc.param = "model"
        return conversation, (exc,)
    return replace(conversation, conversation=replace(conversation.conversation, model=model)), ()


@router.websocket("/v1/realtime")
async def openai_realtime(websocket: WebSocket) -> None:
    identity = await authenticate_socket(websocket)
    if identity is None:
        return
    offered = websocket.scope.get("subprotocols") or []
    beta = "realtime=v1" in websocket.headers.get("openai-beta", "") or "openai-beta.realtime-v1" in offered
    services = services_of(websocket)
    try:
        initial = _initial_config(identity)
    except APIError as exc:  # minted by an edge that validated differently: refuse rather than guess
        log.warning("refused a realtime handshake: its ephemeral secret's session is invalid: %s", exc.message)
        await websocket.close(code=1008)
        return
    try:
        default_model = await services.models.served()
    except APIError:
        default_model = None
    opening_errors: tuple[APIError, ...] = ()
    model = websocket.query_params.get("model")
    if not beta and initial is None and model and websocket.query_params.get("intent") != "transcription":
        initial, opening_errors = await _conversation(services, model)
    protocol = OpenAIProtocol(
        beta=beta,
        default_model=default_model,
        lifetime_s=services.settings.realtime_max_session_s,
        initial=initial,
        session_id=identity.session_id,
        opening_errors=opening_errors,
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
