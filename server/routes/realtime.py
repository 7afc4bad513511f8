"""WebSocket routes of realtime sessions: OpenAI's `/v1/realtime` (GA and beta) and the simple `/ws`.

Beta is chosen by the `OpenAI-Beta: realtime=v1` header, or by the `openai-beta.realtime-v1`
subprotocol that browsers send since they cannot set headers; browsers also offer the `realtime`
subprotocol, which is accepted.
"""

from fastapi import APIRouter, WebSocket

from server.errors import APIError
from server.realtime.connection import serve_connection
from server.realtime.openai_protocol import OpenAIProtocol
from server.realtime.simple_protocol import SimpleProtocol
from server.services import services

router = APIRouter()


@router.websocket("/v1/realtime")
async def openai_realtime(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    beta = "realtime=v1" in websocket.headers.get("openai-beta", "") or "openai-beta.realtime-v1" in offered
    state = services(websocket)
    try:
        default_model = await state.models.served()
    except APIError:
        default_model = None
    protocol = OpenAIProtocol(beta=beta, default_model=default_model, lifetime_s=state.settings.realtime_max_session_s)
    await serve_connection(websocket, protocol, state, "realtime" if "realtime" in offered else None)


@router.websocket("/ws")
async def simple_realtime(websocket: WebSocket) -> None:
    await serve_connection(websocket, SimpleProtocol(), services(websocket))
