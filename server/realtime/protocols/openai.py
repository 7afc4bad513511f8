"""OpenAI's Realtime protocol: transcription sessions (GA and beta flavours) and conversation
sessions (GA).

Parses client events into calls on the session core and renders the core's events as server
events. GA configures with `session.update` (`session.type`: `"transcription"` or `"realtime"`,
audio fields under `session.audio.input`); beta with `transcription_session.update` (flat
`input_audio_format`, `input_audio_transcription`, `turn_detection`). Both take the extension
`…transcription.partial_interval_ms`. An update is applied whole or not at all: any invalid field
answers an `error` and leaves the session as it was; the one exception is audio output, which is
refused with an `error` while the rest of the update applies (replies are text).

A conversation session's client events (`conversation.item.*`, `response.*`) act on the session's
`Responder`; in a transcription session they get an `error`.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from server.core import metrics
from server.core.errors import APIError
from server.realtime import events as ev
from server.realtime.audio_input import AudioInput
from server.realtime.config import AudioFormat, NamedFunction, SessionConfig
from server.realtime.conversation import items as core
from server.realtime.conversation.responder import ItemReference, Responder, ResponseRequest
from server.realtime.ids import new_id
from server.realtime.protocols import openai_events as rt
from server.realtime.protocols.client_text import echoed_id, parse_json, shown, validated
from server.realtime.protocols.openai_session import (
    audio_output_refused,
    ga_update,
    max_tokens_of,
    parse_beta_session,
    session_object,
    tool_choice_of,
)
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
        opening_errors: tuple[APIError, ...] = (),
    ) -> None:
        """`initial`: the config to start with (an ephemeral secret's session), else the defaults;
        `session_id`: the id to show (the one an ephemeral secret was minted with), else a new one;
        `opening_errors`: sent after the session's first event (what the connection asked for and
        did not get)."""
        self.beta = beta
        self.session_id = session_id or new_id("sess")
        self.default_model = default_model
        self.expires_at = int(time.time() + lifetime_s)
        self._initial = initial or SessionConfig()
        self._opening_errors = opening_errors
        self._previous_ids: dict[str, str | None] = {}  # output items announced, not done: the item before each

    def initial_config(self) -> SessionConfig:
        return self._initial

    def streams_with(self, model: str) -> None:
        """Live transcription streams through this (Voxtral Realtime) model: the session names it."""
        self.default_model = model

    def error(self, exc: APIError) -> Message:
        return error_event(exc)

    def opening(self, config: SessionConfig) -> list[Message]:
        kind = "transcription_session.created" if self.beta else "session.created"
        return [self._event(kind, session=self.session_object(config)), *map(error_event, self._opening_errors)]

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
        refusals: list[APIError] = []
        if self.beta:
            config = parse_beta_session(event.session, session.config)
        else:
            config, refusals = ga_update(event.session, session.config)
        choice = config.conversation.tool_choice
        if config.kind == "realtime" and isinstance(choice, NamedFunction):
            _check_named(choice, config.conversation.tools, "session.tool_choice.name")
        try:
            await session.update(config)
        except APIError as exc:
            if exc.param == "model":  # the session checks the model as HTTP does; name it where it was sent
                field = "input_audio_transcription" if self.beta else "audio.input.transcription"
                exc.param = f"session.{field}.model"
            raise
        updated = "transcription_session.updated" if self.beta else "session.updated"
        return [*map(error_event, refusals), self._event(updated, session=self.session_object(session.config))]

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

    # Conversation sessions -------------------------------------------------------------------

    async def _item_create(self, event: rt.ConversationItemCreate, session: RealtimeSession) -> list[Message]:
        _responder(session, event.type).add(_item(event.item, session.config.audio_format), event.previous_item_id)
        return []

    async def _item_retrieve(self, event: rt.ConversationItemRetrieve, session: RealtimeSession) -> list[Message]:
        item = _responder(session, event.type).get(event.item_id)
        return [self._sent(rt.ConversationItemRetrieved(item=_shown(item)))]

    async def _item_delete(self, event: rt.ConversationItemDelete, session: RealtimeSession) -> list[Message]:
        _responder(session, event.type).delete(event.item_id)
        return []

    async def _item_truncate(self, event: rt.ConversationItemTruncate, session: RealtimeSession) -> list[Message]:
        """Truncation cuts an assistant's audio where playback stopped; replies here are text, with
        nothing to cut: a text reply is left whole and the truncation confirmed."""
        item = _responder(session, event.type).get(event.item_id)
        if not (isinstance(item, core.Message) and item.role == "assistant"):
            raise APIError(400, "Only an assistant message can be truncated.", param="item_id", code="invalid_value")
        if event.content_index >= len(item.content):
            raise APIError(
                400,
                f"The item has {len(item.content)} content parts; `content_index` {event.content_index} is not one.",
                param="content_index",
                code="invalid_value",
            )
        truncated = rt.ConversationItemTruncated(
            item_id=item.id, content_index=event.content_index, audio_end_ms=event.audio_end_ms
        )
        return [self._sent(truncated)]

    async def _response_create(self, event: rt.ResponseCreate, session: RealtimeSession) -> list[Message]:
        responder = _responder(session, event.type)
        params = event.response
        tools = None if params.tools is None else tuple(tool.tool() for tool in params.tools)
        choice = None if params.tool_choice is None else tool_choice_of(params.tool_choice)
        if isinstance(choice, NamedFunction):
            _check_named(choice, tools or session.config.conversation.tools, "response.tool_choice.name")
        entries = None
        if params.input is not None:
            entries = tuple(
                ItemReference(entry.id)
                if isinstance(entry, rt.ItemReferenceIn)
                else _item(entry, session.config.audio_format)
                for entry in params.input
            )
        request = ResponseRequest(
            instructions=params.instructions,
            tools=tools,
            tool_choice=choice,
            max_output_tokens=max_tokens_of(params.max_output_tokens),
            metadata=params.metadata,
            in_conversation=params.conversation == "auto",
            input=entries,
        )
        responder.respond(request)
        if params.output_modalities and "audio" in params.output_modalities:
            return [error_event(audio_output_refused("response.output_modalities"))]
        return []

    async def _response_cancel(self, event: rt.ResponseCancel, session: RealtimeSession) -> list[Message]:
        if not _responder(session, event.type).cancel("client_cancelled", event.response_id):
            which = "no active response" if event.response_id is None else f"no active response `{event.response_id}`"
            raise APIError(400, f"There is {which} to cancel.", code="response_cancel_not_active")
        return []

    async def _output_audio_clear(self, event: rt.OutputAudioBufferClear, session: RealtimeSession) -> list[Message]:
        _responder(session, event.type)
        return []  # replies are text: there is never output audio to clear

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
            case ev.ItemAdded():
                item = _shown(event.item)
                return [
                    rt.ConversationItemAdded(previous_item_id=event.previous_item_id, item=item),
                    rt.ConversationItemDone(previous_item_id=event.previous_item_id, item=item),
                ]
            case ev.ItemDeleted():
                return [rt.ConversationItemDeleted(item_id=event.item_id)]
            case ev.ResponseStarted():
                return [rt.ResponseCreated(response=_response(event.response))]
            case ev.OutputItemStarted():
                return self._output_item_started(event)
            case ev.OutputTextDelta():
                return [
                    rt.OutputTextDelta(
                        response_id=event.response_id,
                        item_id=event.item_id,
                        output_index=event.output_index,
                        delta=event.delta,
                    )
                ]
            case ev.FunctionArgumentsDelta():
                return [
                    rt.FunctionCallArgumentsDelta(
                        response_id=event.response_id,
                        item_id=event.call.id,
                        output_index=event.output_index,
                        call_id=event.call.call_id,
                        delta=event.delta,
                    )
                ]
            case ev.OutputItemFinished():
                return self._output_item_finished(event)
            case ev.ResponseFinished():
                return [rt.ResponseDone(response=_response(event.response))]
        raise TypeError(f"no rendering for {event!r}")

    def _output_item_started(self, event: ev.OutputItemStarted) -> list[rt.ServerEvent]:
        response_id, index = event.response.id, event.output_index
        item = _shown(event.item)
        shown: list[rt.ServerEvent] = [
            rt.ResponseOutputItemAdded(response_id=response_id, output_index=index, item=item)
        ]
        if event.response.in_conversation:
            self._previous_ids[event.item.id] = event.previous_item_id
            shown.append(rt.ConversationItemAdded(previous_item_id=event.previous_item_id, item=item))
        if isinstance(event.item, core.Message):
            part = rt.TextPart(text="")
            shown.append(
                rt.ResponseContentPartAdded(
                    response_id=response_id, item_id=event.item.id, output_index=index, part=part
                )
            )
        return shown

    def _output_item_finished(self, event: ev.OutputItemFinished) -> list[rt.ServerEvent]:
        response_id, index, item = event.response.id, event.output_index, event.item
        shown: list[rt.ServerEvent] = []
        if isinstance(item, core.Message):
            text = item.text()
            shown += [
                rt.OutputTextDone(response_id=response_id, item_id=item.id, output_index=index, text=text),
                rt.ResponseContentPartDone(
                    response_id=response_id, item_id=item.id, output_index=index, part=rt.TextPart(text=text)
                ),
            ]
        elif isinstance(item, core.FunctionCall):
            shown.append(
                rt.FunctionCallArgumentsDone(
                    response_id=response_id,
                    item_id=item.id,
                    output_index=index,
                    call_id=item.call_id,
                    name=item.name,
                    arguments=item.arguments,
                )
            )
        done = _shown(item)
        shown.append(rt.ResponseOutputItemDone(response_id=response_id, output_index=index, item=done))
        if event.response.in_conversation:
            previous = self._previous_ids.pop(item.id, None)
            shown.append(rt.ConversationItemDone(previous_item_id=previous, item=done))
        return shown

    def _committed(self, event: ev.Committed) -> list[rt.ServerEvent]:
        committed = rt.Committed(item_id=event.item_id, previous_item_id=event.previous_item_id)
        item = rt.MessageShown(id=event.item_id, status="completed", role="user", content=[rt.InputAudio()])
        if self.beta:
            return [committed, rt.ConversationItemCreated(previous_item_id=event.previous_item_id, item=item)]
        return [
            committed,
            rt.ConversationItemAdded(previous_item_id=event.previous_item_id, item=item),
            rt.ConversationItemDone(previous_item_id=event.previous_item_id, item=item),
        ]

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
_CONVERSATION_ROUTES: dict[str, _Route[Any]] = {
    "conversation.item.create": _Route(rt.ConversationItemCreate, OpenAIProtocol._item_create),
    "conversation.item.retrieve": _Route(rt.ConversationItemRetrieve, OpenAIProtocol._item_retrieve),
    "conversation.item.delete": _Route(rt.ConversationItemDelete, OpenAIProtocol._item_delete),
    "conversation.item.truncate": _Route(rt.ConversationItemTruncate, OpenAIProtocol._item_truncate),
    "response.create": _Route(rt.ResponseCreate, OpenAIProtocol._response_create),
    "response.cancel": _Route(rt.ResponseCancel, OpenAIProtocol._response_cancel),
    "output_audio_buffer.clear": _Route(rt.OutputAudioBufferClear, OpenAIProtocol._output_audio_clear),
}
_GA_ROUTES = {
    "session.update": _Route(rt.SessionUpdate, OpenAIProtocol._update),
    **_BUFFER_ROUTES,
    **_CONVERSATION_ROUTES,
}
_BETA_ROUTES = {"transcription_session.update": _Route(rt.SessionUpdate, OpenAIProtocol._update), **_BUFFER_ROUTES}
# The session events `_event` builds by type name, as `opening` names them.
_SESSION_EVENTS: dict[str, type[rt.ServerEvent]] = {
    model.model_fields["type"].default: model
    for model in (rt.SessionCreated, rt.SessionUpdated, rt.TranscriptionSessionCreated, rt.TranscriptionSessionUpdated)
}


def _responder(session: RealtimeSession, kind: str) -> Responder:
    if session.responder is None:
        raise invalid(
            f"`{kind}` is for conversation sessions; this is a transcription session "
            '(a `session.update` with `type: "realtime"` makes it one).',
            "type",
        )
    return session.responder


def _check_named(choice: NamedFunction, tools: tuple[Any, ...], param: str) -> None:
    if choice.name not in {tool.name for tool in tools}:
        raise invalid(f"`tool_choice` names the function `{shown(choice.name)}`, which is not among the tools.", param)


def _item(item: rt.MessageIn | rt.FunctionCallIn | rt.FunctionCallOutputIn, audio_format: AudioFormat) -> core.Item:
    """A client's item as the conversation keeps it; its audio is in the session's input format."""
    item_id = item.id or new_id("item")
    match item:
        case rt.FunctionCallIn():
            return core.FunctionCall(item_id, item.call_id, item.name, item.arguments)
        case rt.FunctionCallOutputIn():
            return core.FunctionCallOutput(item_id, item.call_id, item.output)
    content: list[core.Content] = []
    for part in item.content:
        if isinstance(part, rt.InputAudioPart):
            audio = core.InputAudio.of(AudioInput(audio_format).decode(part.audio))
            audio.transcript = part.transcript
            content.append(audio)
        elif isinstance(part, rt.InputTextPart):
            content.append(core.InputText(part.text))
        else:
            content.append(core.OutputText(part.text))
    return core.Message(item_id, item.role, content)


def _shown(item: core.Item) -> rt.ItemShown:
    """An item as the protocol shows it now (audio is shown by its transcript)."""
    match item:
        case core.FunctionCall():
            return rt.FunctionCallShown(
                id=item.id, status=item.status, call_id=item.call_id, name=item.name, arguments=item.arguments
            )
        case core.FunctionCallOutput():
            return rt.FunctionCallOutputShown(id=item.id, status=item.status, call_id=item.call_id, output=item.output)
    content: list[rt.InputAudio | rt.InputTextShown | rt.ReplyText] = []
    for part in item.content:
        if isinstance(part, core.InputAudio):
            content.append(rt.InputAudio(transcript=part.transcript))
        elif isinstance(part, core.InputText):
            content.append(rt.InputTextShown(text=part.text))
        else:
            content.append(rt.ReplyText(text=part.text))
    return rt.MessageShown(id=item.id, status=item.status, role=item.role, content=content)


def _response(state: core.ResponseState) -> rt.ResponseShown:
    details = None
    if state.status == "cancelled" or state.status == "incomplete":
        details = rt.StatusDetails(type=state.status, reason=state.reason)
    elif state.status == "failed":
        code, message = state.error or ("server_error", None)
        details = rt.StatusDetails(type="failed", error=rt.StatusError(type="server_error", code=code, message=message))
    usage = None
    if state.status != "in_progress":
        counts = state.usage
        usage = rt.ResponseUsage(
            input_tokens=counts.input_tokens,
            output_tokens=counts.output_tokens,
            total_tokens=counts.input_tokens + counts.output_tokens,
            output_token_details={"text_tokens": counts.output_tokens, "audio_tokens": 0},
        )
    return rt.ResponseShown(
        id=state.id,
        status=state.status,
        status_details=details,
        output=[_shown(item) for item in state.output],
        usage=usage,
        metadata=state.metadata,
        max_output_tokens=state.max_output_tokens or "inf",
    )
