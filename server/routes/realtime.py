"""WebSocket routes of realtime sessions: OpenAI's `/v1/realtime` (GA and beta) and the simple `/ws`.

Beta is chosen by the `OpenAI-Beta: realtime=v1` header, or by the `openai-beta.realtime-v1`
subprotocol that browsers send since they cannot set headers; browsers also offer the `realtime`
subprotocol, which is accepted.
"""

from fastapi import APIRouter, FastAPI, WebSocket

from server.errors import APIError
from server.realtime.connection import SessionSlots, serve_connection
from server.realtime.openai_protocol import OpenAIProtocol
from server.realtime.simple_protocol import SimpleProtocol

router = APIRouter()


def _slots(app: FastAPI) -> SessionSlots:
    """The app's session counter, made on first use (one per app: tests run several apps at once)."""
    if not hasattr(app.state, "realtime_slots"):
        app.state.realtime_slots = SessionSlots(app.state.settings.realtime_max_sessions)
    return app.state.realtime_slots


@router.websocket("/v1/realtime")
async def openai_realtime(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    beta = "realtime=v1" in websocket.headers.get("openai-beta", "") or "openai-beta.realtime-v1" in offered
    try:
        default_model = await websocket.app.state.models.served()
    except APIError:
        default_model = None
    protocol = OpenAIProtocol(
        beta=beta, default_model=default_model, lifetime_s=websocket.app.state.settings.realtime_max_session_s
    )
    await serve_connection(websocket, protocol, _slots(websocket.app), "realtime" if "realtime" in offered else None)


@router.websocket("/ws")
async def simple_realtime(websocket: WebSocket) -> None:
    await serve_connection(websocket, SimpleProtocol(), _slots(websocket.app))
