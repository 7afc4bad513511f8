"""Ephemeral client secrets for browsers, minted with a real API key (OpenAI's shapes).

GA: `POST /v1/realtime/client_secrets` `{"expires_after": {"anchor": "created_at", "seconds"},
"session": {...}}` answers `{"value": "ek_…", "expires_at", "session"}`. Beta:
`POST /v1/realtime/transcription_sessions` takes the beta session fields (and
`client_secret.expires_at`) and answers the session with `client_secret: {value, expires_at}`.
The session given is validated now and applied when the secret connects.
"""

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from server.api.access import require_api_key
from server.api.realtime_sessions import validated_session
from server.api.services import Services, services_of
from server.core.auth import Identity, SessionFlavour
from server.core.errors import APIError
from server.realtime.config import SessionConfig
from server.realtime.ids import new_id
from server.realtime.protocols.openai_session import (
    GASessionBody,
    beta_session_properties,
    session_object,
)

router = APIRouter()


class ExpiresAfter(BaseModel):
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(default=600, ge=10, le=7200)


class ClientSecretRequest(BaseModel):
    expires_after: ExpiresAfter = Field(default_factory=ExpiresAfter)
    session: GASessionBody | None = Field(None, description="Applied when the secret connects.")


class BetaClientSecretOptions(BaseModel):
    expires_at: ExpiresAfter = Field(default_factory=ExpiresAfter)


class BetaTranscriptionSessionRequest(BaseModel):
    """Beta session fields (validated as a `transcription_session.update` is) plus the secret's lifetime."""

    model_config = ConfigDict(extra="allow", json_schema_extra=beta_session_properties)
    client_secret: BetaClientSecretOptions = Field(default_factory=BetaClientSecretOptions)

    def session(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


async def _shown(services: Services, flavour: SessionFlavour, config: SessionConfig, session_id: str) -> dict[str, Any]:
    """The session as its socket will show it in `session.created`, with the same id."""
    try:
        default_model = await services.models.served()
    except APIError:
        default_model = None
    return session_object(
        config,
        beta=flavour == "beta",
        session_id=session_id,
        expires_at=int(time.time() + services.settings.realtime_max_session_s),
        default_model=default_model,
    )


@router.post("/v1/realtime/client_secrets")
async def create_client_secret(
    body: ClientSecretRequest, request: Request, owner: Annotated[Identity, Depends(require_api_key)]
) -> dict[str, Any]:
    services = services_of(request)
    session = body.session or {}
    config = await validated_session(services, "ga", session)
    session_id = new_id("sess")
    minted = services.keys.mint(owner, "ga", session, body.expires_after.seconds, session_id)
    shown = await _shown(services, "ga", config, session_id)
    return {"value": minted.value, "expires_at": minted.expires_at, "session": shown}


@router.post("/v1/realtime/transcription_sessions")
async def create_transcription_session(
    body: BetaTranscriptionSessionRequest, request: Request, owner: Annotated[Identity, Depends(require_api_key)]
) -> dict[str, Any]:
    services = services_of(request)
    session = body.session()
    config = await validated_session(services, "beta", session)
    session_id = new_id("sess")
    minted = services.keys.mint(owner, "beta", session, body.client_secret.expires_at.seconds, session_id)
    shown = await _shown(services, "beta", config, session_id)
    return {**shown, "client_secret": {"value": minted.value, "expires_at": minted.expires_at}}
