"""WebSocket routes of realtime sessions: OpenAI's `/v1/realtime` (GA and beta) and the simple `/ws`.

Beta is chosen by the `OpenAI-Beta: realtime=v1` header, or by the `openai-beta.realtime-v1`
subprotocol that browsers send since they cannot set headers; browsers also offer the `realtime`
subprotocol, which is accepted (and must be, when they send their key as the subprotocol
`openai-insecure-api-key.<key>`: a browser fails a handshake that selects none).

The key is checked before the handshake is accepted; a refused key gets HTTP 403 and no session.
An ephemeral secret starts its session with the config it was minted with.
"""

import logging

from fastapi import APIRouter, WebSocket

from server import metrics
from server.access import authenticate_socket
from server.auth import Identity
from server.errors import APIError
from server.realtime.config import SessionConfig
from server.realtime.connection import WireProtocol, serve_connection
from server.realtime.openai_protocol import OpenAIProtocol, parse_beta_session, parse_ga_session
from server.realtime.simple_protocol import SimpleProtocol
from server.services import Services, services

router = APIRouter()
log = logging.getLogger("edge.auth")


def _initial_config(identity: Identity) -> SessionConfig | None:
    if identity.session is None:
        return None
    parse = parse_beta_session if identity.flavour == "beta" else parse_ga_session
    return parse(identity.session, SessionConfig())


@router.websocket("/v1/realtime")
async def openai_realtime(websocket: WebSocket) -> None:
    identity = await authenticate_socket(websocket)
    if identity is None:
        return
    offered = websocket.scope.get("subprotocols") or []
    beta = "realtime=v1" in websocket.headers.get("openai-beta", "") or "openai-beta.realtime-v1" in offered
    state = services(websocket)
    try:
        initial = _initial_config(identity)
    except APIError as exc:  # minted by an edge that validated differently: refuse rather than guess
        log.warning("refused a realtime handshake: its ephemeral secret's session is invalid: %s", exc.message)
        await websocket.close(code=1008)
        return
    try:
        default_model = await state.models.served()
    except APIError:
        default_model = None
    protocol = OpenAIProtocol(
        beta=beta, default_model=default_model, lifetime_s=state.settings.realtime_max_session_s, initial=initial
    )
    await _serve_for(identity, websocket, protocol, state, "realtime" if "realtime" in offered else None)


@router.websocket("/ws")
async def simple_realtime(websocket: WebSocket) -> None:
    identity = await authenticate_socket(websocket)
    if identity is None:
        return
    offered = websocket.scope.get("subprotocols") or []
    state = services(websocket)
    await _serve_for(identity, websocket, SimpleProtocol(), state, "realtime" if "realtime" in offered else None)


async def _serve_for(
    identity: Identity, websocket: WebSocket, protocol: WireProtocol, state: Services, subprotocol: str | None
) -> None:
    """Serve the session within the key's `API_KEY_MAX_SESSIONS` (over it: accepted, closed with 1013)."""
    sessions = state.keys.sessions
    if not sessions.try_acquire(identity.name):
        await websocket.accept(subprotocol=subprotocol)
        await websocket.close(1013, f"Too many realtime sessions for this key (at most {sessions.limit}).")
        return
    metrics.KEY_REALTIME_SESSIONS.labels(identity.name).inc()
    try:
        await serve_connection(websocket, protocol, state, subprotocol)
    finally:
        sessions.release(identity.name)
