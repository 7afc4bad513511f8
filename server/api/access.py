"""Access control at the edge's transports: the `/v1` HTTP dependency and the WebSocket handshake.

HTTP routes take `Authorization: Bearer <key>` (what the OpenAI SDKs send) and answer 401 in
OpenAI's shape otherwise; the WebRTC call routes take ephemeral secrets too. Realtime sockets take
the same header, or from a browser (which cannot set headers) the subprotocol
`openai-insecure-api-key.<key>`; they also take ephemeral secrets.
The caller's key name is kept in `metrics.usage_key` for the metrics of the request or session.
"""

import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.websockets import WebSocket

from server.api.services import services_of
from server.core import metrics
from server.core.auth import EPHEMERAL_PREFIX, Identity, masked
from server.core.errors import APIError

log = logging.getLogger("edge.auth")

KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."

_bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="An API key of the edge (`API_KEYS`), sent as `Authorization: Bearer <key>`.",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)]


def invalid_api_key(token: str | None, secrets_taken: bool = False) -> APIError:
    """OpenAI's 401 for a missing or refused key (`secrets_taken`: where ephemeral secrets are
    accepted); the key itself is never echoed whole."""
    if not token:
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    elif token.startswith(EPHEMERAL_PREFIX) and secrets_taken:
        message = "The ephemeral client secret is invalid or expired; mint a new one."
    elif token.startswith(EPHEMERAL_PREFIX):
        message = "Ephemeral client secrets (ek_...) open realtime sessions only. Use an API key for this request."
    else:
        message = f"Incorrect API key provided: {masked(token)}. Ask the operator of this server for a valid key."
    return APIError(
        401,
        message,
        code="invalid_api_key",
        type="invalid_request_error",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_api_key(request: Request, credentials: Bearer) -> Identity:
    """The dependency of every `/v1` HTTP route: a configured API key, else 401.

    Async on purpose: the key name set here stays visible to the route (same task and context).
    """
    return _identified(request, credentials, secrets_taken=False)


async def require_realtime_key(request: Request, credentials: Bearer) -> Identity:
    """Like `require_api_key`, and an ephemeral secret is taken too: the dependency of the routes
    that open realtime sessions over HTTP (WebRTC calls)."""
    return _identified(request, credentials, secrets_taken=True)


def _identified(request: Request, credentials: HTTPAuthorizationCredentials | None, secrets_taken: bool) -> Identity:
    token = credentials.credentials if credentials else None
    keys = services_of(request).keys
    identity = keys.check_realtime(token) if secrets_taken else keys.check_bearer(token)
    if identity is None:
        raise invalid_api_key(token, secrets_taken)
    metrics.usage_key.set(identity.name)
    metrics.KEY_REQUESTS.labels(identity.name).inc()
    return identity


async def metrics_access(request: Request, credentials: Bearer) -> None:
    """`/metrics` needs a key only with `METRICS_REQUIRE_KEY`."""
    if services_of(request).settings.metrics_require_key:
        await require_api_key(request, credentials)


def socket_credentials(websocket: WebSocket) -> tuple[str | None, bool]:
    """The token a socket brings, and whether it came as the browser subprotocol.

    Never from the query string: URLs end up in logs and browser history.
    """
    for offered in websocket.scope.get("subprotocols") or []:
        if offered.startswith(KEY_SUBPROTOCOL_PREFIX):
            return offered[len(KEY_SUBPROTOCOL_PREFIX) :], True
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), False
    return None, False


async def authenticate_socket(websocket: WebSocket) -> Identity | None:
    """The socket's identity; None after refusing the handshake (HTTP 403, no session accepted)."""
    token, _ = socket_credentials(websocket)
    identity = services_of(websocket).keys.check_realtime(token)
    if identity is None:
        client = websocket.client.host if websocket.client else "?"
        log.warning(
            "refused a realtime handshake on %s from %s: %s",
            websocket.url.path,
            client,
            "no key" if not token else "invalid or expired key",
        )
        await websocket.close(code=1008)
        return None
    metrics.usage_key.set(identity.name)
    return identity
