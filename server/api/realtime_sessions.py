"""How an OpenAI realtime session starts, whatever carries it (a WebSocket, a WebRTC call): its
first config (from an ephemeral secret's session, a call's `session` field, or a conversation
model asked for by `?model=`), and the protocol adapter that serves it.
"""

from dataclasses import replace
from typing import Any

from server.api.services import Services
from server.core.auth import Identity, SessionFlavour
from server.core.errors import APIError
from server.realtime.config import SessionConfig
from server.realtime.protocols.openai import OpenAIProtocol
from server.realtime.protocols.openai_session import parse_beta_session, parse_ga_session


async def validated_session(services: Services, flavour: SessionFlavour, session: dict[str, Any]) -> SessionConfig:
    """The config a client-given `session` starts with; 400 for a field not valid, or a model not served."""
    parse = parse_beta_session if flavour == "beta" else parse_ga_session
    config = parse(session, SessionConfig())
    if config.transcription.model is not None:
        await services.models.resolve(config.transcription.model)
    return config


def secret_config(identity: Identity) -> SessionConfig | None:
    """The config an ephemeral secret was minted with (None for an API key, or a secret without one)."""
    if identity.session is None:
        return None
    parse = parse_beta_session if identity.flavour == "beta" else parse_ga_session
    return parse(identity.session, SessionConfig())


async def conversation(services: Services, model: str) -> tuple[SessionConfig, tuple[APIError, ...]]:
    """A GA session asked for with `?model=` (and no `intent=transcription`) is a conversation
    session, as OpenAI's is; a model not served is said at once, and the served one answers."""
    config = SessionConfig(kind="realtime")
    try:
        await services.models.resolve(model)
    except APIError as exc:
        exc.param = "model"
        return config, (exc,)
    return replace(config, conversation=replace(config.conversation, model=model)), ()


async def openai_protocol(
    services: Services,
    identity: Identity,
    initial: SessionConfig | None,
    *,
    beta: bool = False,
    model: str | None = None,
    transcription_intent: bool = False,
) -> OpenAIProtocol:
    """The protocol adapter of one OpenAI realtime session starting with `initial` (else, with a
    GA `model` and no transcription intent, a conversation session; else the defaults)."""
    try:
        default_model = await services.models.served()
    except APIError:
        default_model = None
    opening_errors: tuple[APIError, ...] = ()
    if not beta and initial is None and model and not transcription_intent:
        initial, opening_errors = await conversation(services, model)
    return OpenAIProtocol(
        beta=beta,
        default_model=default_model,
        lifetime_s=services.settings.realtime_max_session_s,
        initial=initial,
        session_id=identity.session_id,
        opening_errors=opening_errors,
    )
