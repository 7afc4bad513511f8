"""OpenAI's Realtime protocol for transcription sessions, GA and beta flavours.

Parses client events into calls on the session core and renders the core's events as server
events. GA configures with `session.update` (`session.type = "transcription"`, fields under
`session.audio.input`); beta with `transcription_session.update` (flat `input_audio_format`,
`input_audio_transcription`, `turn_detection`). Both take the extensions
`…transcription.partial_interval_ms` and `session.assistant`. An update is applied whole or not at
all: any invalid field answers an `error` and leaves the session as it was.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar, cast

from server.core import metrics
from server.core.errors import APIError
from server.realtime import events as ev
from server.realtime.config import SessionConfig
from server.realtime.ids import new_id
from server.realtime.protocols import openai_events as rt
from server.realtime.protocols.client_text import echoed_id, parse_json, shown, validated
from server.realtime.protocols.openai_session import parse_beta_session, parse_ga_session, session_object
from server.realtime.session import RealtimeSession

Message = dict[str, Any]
E = TypeVar("E", bound=rt.ClientEvent)


def invalid(message: str, param: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def error_event(error: APIError, client_event_id: str | None = None) -> Message:
    detail = rt.ErrorDetail(
        type=error.type, code=error.code, message=error.message, param=error.param, event_id=client_event_id
    )
    return rt.sent(rt.ErrorEvent(error=detail), None)  # the same in both flavours


def _usage(usage: ev.StreamUsage) -> rt.TranscriptionUsage:
    return rt.TranscriptionUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        input_token_details=rt.InputTokenDetails(text_tokens=0, audio_tokens=usage.input_tokens),
    )


class OpenAIProtocol:
    """One connection's view of the protocol: its flavour, session id and the model name to show."""

    def __init__(
        self,
        *,
        beta: bool,
        default_model: str | None,
        lifetime_s: float,
        initial: SessionConfig | None = None,
        session_id: str | None = None,
    ) -> None:
        """`initial`: the config to start with (an ephemeral secret's session), else the defaults;
        `session_id`: the id to show (the one an ephemeral secret was minted with), else a new one."""
        self.beta = beta
        self.session_id = session_id or new_id("sess")
        self.default_model = default_model
        self.expires_at = int(time.time() + lifetime_s)
        self._initial = initial or SessionConfig()

    def initial_config(self) -> SessionConfig:
        return self._initial

    def streams_with(self, model: str) -> None:
        """Live transcription streams through this (Voxtral Realtime) model: the session names it."""
        self.default_model = model

    def error(self, exc: APIError) -> Message:
        return error_event(exc)

    def opening(self, config: SessionConfig) -> list[Message]:
        kind = "transcription_session.created" if self.beta else "session.created"
        return [self._event(kind, session=self.session_object(config))]

    def session_object(self, config: SessionConfig) -> dict[str, Any]:
        return session_object(
            config,
            beta=self.beta,
            session_id=self.session_id,
            expires_at=self.expires_at,
            default_model=self.default_model,
        )

    async def handle(self, text: str, session: RealtimeSession) -> list[Message]:
        """Apply one client message; return the direct answers (updates, `cleared`, errors)."""
        try:
            message = parse_json(text)
        except APIError as exc:
            return [error_event(exc)]
        if not isinstance(message, dict):
            return [error_event(invalid("A client event must be a JSON object.", "type"))]
        client_event_id = echoed_id(message.get("event_id"))
        try:
            return await self._dispatch(message, session)
        except APIError as exc:
            return [error_event(exc, client_event_id)]

    async def _dispatch(self, message: dict[str, Any], session: RealtimeSession) -> list[Message]:
        routes = _BETA_ROUTES if self.beta else _GA_ROUTES
        kind = message.get("type")
        route = routes.get(kind) if isinstance(kind, str) else None
        if route is None:
            supported = ", ".join(routes)
            raise invalid(
                f"Unsupported event type `{shown(kind)}`. Supported: {supported}.", "type", code="unknown_event"
            )
        return await route.handler(self, validated(route.model, message), session)

    async def _update(self, event: rt.SessionUpdate, session: RealtimeSession) -> list[Message]:
        parse = parse_beta_session if self.beta else parse_ga_session
        try:
            await session.update(parse(event.session, session.config))
        except APIError as exc:
            if exc.param == "model":  # the session checks the model as HTTP does; name it where it was sent
                field = "input_audio_transcription" if self.beta else "audio.input.transcription"
                exc.param = f"session.{field}.model"
            raise
        updated = "transcription_session.updated" if self.beta else "session.updated"
        return [self._event(updated, session=self.session_object(session.config))]

    async def _append(self, event: rt.InputAudioBufferAppend, session: RealtimeSession) -> list[Message]:
        await session.append(event.audio)
        metrics.count_key_audio(session.config.audio_format.seconds(len(event.audio)))
        return []

    async def _commit(self, event: rt.InputAudioBufferCommit, session: RealtimeSession) -> list[Message]:
        session.commit()
        return []

    async def _clear(self, event: rt.InputAudioBufferClear, session: RealtimeSession) -> list[Message]:
        session.clear()
        return [self._sent(rt.Cleared())]

    def render(self, event: ev.Event) -> list[Message]:
        """Server events for one core event."""
        return [self._sent(server_event) for server_event in self._server_events(event)]

    def _server_events(self, event: ev.Event) -> list[rt.ServerEvent]:
        match event:
            case ev.SpeechStarted():
                return [rt.SpeechStarted(item_id=event.item_id, audio_start_ms=event.audio_start_ms)]
            case ev.SpeechStopped():
                return [rt.SpeechStopped(item_id=event.item_id, audio_end_ms=event.audio_end_ms)]
            case ev.Committed():
                return self._committed(event)
            case ev.TranscriptDelta():
                return [
                    rt.TranscriptionDelta(item_id=event.item_id, delta=event.delta, audio_end_ms=event.audio_end_ms)
                ]
            case ev.TranscriptPartial():
                return [rt.TranscriptionPartial(item_id=event.item_id, transcript=event.transcript)]
            case ev.TranscriptCompleted():
                words = None if event.words is None else [rt.Word(**asdict(w)) for w in event.words]
                return [
                    rt.TranscriptionCompleted(
                        item_id=event.item_id, transcript=event.transcript, usage=_usage(event.usage), words=words
                    )
                ]
            case ev.TranscriptFailed():
                error = rt.TranscriptionError(code=event.code, message=event.message)
                return [rt.TranscriptionFailed(item_id=event.item_id, error=error)]
            case ev.ResponseCreated():
                return [rt.ResponseCreated(response=rt.StartedResponse(id=event.response_id))]
            case ev.ResponseDelta():
                delta = rt.TextDelta if self.beta else rt.OutputTextDelta
                return [delta(response_id=event.response_id, item_id=event.item_id, delta=event.delta)]
            case ev.ResponseDone():
                return self._response_done(event)
        raise TypeError(f"no rendering for {event!r}")

    def _committed(self, event: ev.Committed) -> list[rt.ServerEvent]:
        committed = rt.Committed(item_id=event.item_id, previous_item_id=event.previous_item_id)
        item = rt.UserAudioItem(id=event.item_id)
        if self.beta:
            return [committed, rt.ConversationItemCreated(previous_item_id=event.previous_item_id, item=item)]
        return [
            committed,
            rt.ConversationItemAdded(previous_item_id=event.previous_item_id, item=item),
            rt.ConversationItemDone(previous_item_id=event.previous_item_id, item=item),
        ]

    def _response_done(self, event: ev.ResponseDone) -> list[rt.ServerEvent]:
        item = rt.AssistantItem(
            id=event.item_id,
            status="completed" if event.status == "completed" else "incomplete",
            content=[rt.ReplyText(type="text" if self.beta else "output_text", text=event.text)],
        )
        details: rt.Cancelled | rt.Failed | None = None
        if event.status == "cancelled":
            details = rt.Cancelled()
        elif event.status == "failed":
            details = rt.Failed(error=rt.BackendError(message=event.error))
        usage = event.usage
        response = rt.FinishedResponse(
            id=event.response_id,
            status=cast(rt.ResponseStatus, event.status),  # checked by the model
            status_details=details,
            output=[item],
            usage=rt.ResponseUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.input_tokens + usage.output_tokens,
            ),
        )
        done = rt.ResponseDone(response=response)
        if event.status != "completed":
            return [done]
        text_done = rt.TextDone if self.beta else rt.OutputTextDone
        return [text_done(response_id=event.response_id, item_id=event.item_id, text=event.text), done]

    def _event(self, kind: str, **fields: Any) -> Message:
        """The message for the server event of type `kind`, its fields checked by its model."""
        return self._sent(_SESSION_EVENTS[kind](**fields))

    def _sent(self, event: rt.ServerEvent) -> Message:
        return rt.sent(event, "beta" if self.beta else "ga")


@dataclass(frozen=True)
class _Route(Generic[E]):
    """How a client event type is handled: the model its event is parsed by, then the handler."""

    model: type[E]
    handler: Callable[[OpenAIProtocol, E, RealtimeSession], Awaitable[list[Message]]]


# Each flavour's client events, in the order the `unknown_event` error lists them.
_BUFFER_ROUTES: dict[str, _Route[Any]] = {
    "input_audio_buffer.append": _Route(rt.InputAudioBufferAppend, OpenAIProtocol._append),
    "input_audio_buffer.commit": _Route(rt.InputAudioBufferCommit, OpenAIProtocol._commit),
    "input_audio_buffer.clear": _Route(rt.InputAudioBufferClear, OpenAIProtocol._clear),
}
_GA_ROUTES = {"session.update": _Route(rt.SessionUpdate, OpenAIProtocol._update), **_BUFFER_ROUTES}
_BETA_ROUTES = {"transcription_session.update": _Route(rt.SessionUpdate, OpenAIProtocol._update), **_BUFFER_ROUTES}
# The session events `_event` builds by type name, as `opening` names them.
_SESSION_EVENTS: dict[str, type[rt.ServerEvent]] = {
    model.model_fields["type"].default: model
    for model in (rt.SessionCreated, rt.SessionUpdated, rt.TranscriptionSessionCreated, rt.TranscriptionSessionUpdated)
}
