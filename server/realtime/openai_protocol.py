"""OpenAI's Realtime protocol for transcription sessions, GA and beta flavours.

Parses client events into calls on the session core and renders the core's events as server
events. GA configures with `session.update` (`session.type = "transcription"`, fields under
`session.audio.input`); beta with `transcription_session.update` (flat `input_audio_format`,
`input_audio_transcription`, `turn_detection`). Both take the extensions
`…transcription.partial_interval_ms` and `session.assistant`. An update is applied whole or not at
all: any invalid field answers an `error` and leaves the session as it was.
"""

import base64
import binascii
import time
from dataclasses import asdict
from typing import Any

from server import metrics
from server.errors import APIError
from server.protocol.realtime_session import parse_beta_session, parse_ga_session, session_object
from server.realtime import events as ev
from server.realtime.client_text import echoed_id, parse_json, shown
from server.realtime.config import SessionConfig
from server.realtime.ids import new_id
from server.realtime.session import RealtimeSession

Message = dict[str, Any]


def invalid(message: str, param: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def error_event(error: APIError, client_event_id: str | None = None) -> Message:
    return {
        "type": "error",
        "event_id": new_id("event"),
        "error": {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": client_event_id,
        },
    }


def _usage(usage: ev.StreamUsage) -> dict[str, Any]:
    return {
        "type": "tokens",
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "input_token_details": {"text_tokens": 0, "audio_tokens": usage.input_tokens},
    }


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
        kind = message.get("type")
        update_kind = "transcription_session.update" if self.beta else "session.update"
        if kind == update_kind:
            parse = parse_beta_session if self.beta else parse_ga_session
            try:
                await session.update(parse(message.get("session"), session.config))
            except APIError as exc:
                if exc.param == "model":  # the session checks the model as HTTP does; name it where it was sent
                    field = "input_audio_transcription" if self.beta else "audio.input.transcription"
                    exc.param = f"session.{field}.model"
                raise
            updated = "transcription_session.updated" if self.beta else "session.updated"
            return [self._event(updated, session=self.session_object(session.config))]
        if kind == "input_audio_buffer.append":
            audio = message.get("audio")
            if not isinstance(audio, str):
                raise invalid("`audio` must be a base64 string.", "audio")
            try:
                payload = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise invalid("`audio` is not valid base64.", "audio") from exc
            await session.append(payload)
            metrics.count_key_audio(session.config.audio_format.seconds(len(payload)))
            return []
        if kind == "input_audio_buffer.commit":
            session.commit()
            return []
        if kind == "input_audio_buffer.clear":
            session.clear()
            return [self._event("input_audio_buffer.cleared")]
        supported = ", ".join(
            (update_kind, "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear")
        )
        raise invalid(f"Unsupported event type `{shown(kind)}`. Supported: {supported}.", "type", code="unknown_event")

    def render(self, event: ev.Event) -> list[Message]:
        """Server events for one core event."""
        match event:
            case ev.SpeechStarted():
                return [
                    self._event(
                        "input_audio_buffer.speech_started", item_id=event.item_id, audio_start_ms=event.audio_start_ms
                    )
                ]
            case ev.SpeechStopped():
                return [
                    self._event(
                        "input_audio_buffer.speech_stopped", item_id=event.item_id, audio_end_ms=event.audio_end_ms
                    )
                ]
            case ev.Committed():
                return self._committed(event)
            case ev.TranscriptDelta():
                spoken = {} if event.audio_end_ms is None else {"audio_end_ms": event.audio_end_ms}
                return [self._transcription("delta", event.item_id, delta=event.delta, **spoken)]
            case ev.TranscriptPartial():
                return [self._transcription("partial", event.item_id, transcript=event.transcript)]
            case ev.TranscriptCompleted():
                words = {} if event.words is None else {"words": [asdict(w) for w in event.words]}
                return [
                    self._transcription(
                        "completed", event.item_id, transcript=event.transcript, usage=_usage(event.usage), **words
                    )
                ]
            case ev.TranscriptFailed():
                error = {"type": "transcription_error", "code": event.code, "message": event.message, "param": None}
                return [self._transcription("failed", event.item_id, error=error)]
            case ev.ResponseCreated():
                response: dict[str, Any] = {
                    "id": event.response_id,
                    "object": "realtime.response",
                    "status": "in_progress",
                    "output": [],
                    "usage": None,
                }
                return [self._event("response.created", response=response)]
            case ev.ResponseDelta():
                return [
                    self._event(
                        "response.output_text.delta",
                        response_id=event.response_id,
                        item_id=event.item_id,
                        output_index=0,
                        content_index=0,
                        delta=event.delta,
                    )
                ]
            case ev.ResponseDone():
                return self._response_done(event)
        raise TypeError(f"no rendering for {event!r}")

    def _committed(self, event: ev.Committed) -> list[Message]:
        committed = self._event(
            "input_audio_buffer.committed", item_id=event.item_id, previous_item_id=event.previous_item_id
        )
        item = {
            "id": event.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        if self.beta:
            return [
                committed,
                self._event("conversation.item.created", previous_item_id=event.previous_item_id, item=item),
            ]
        return [
            committed,
            self._event("conversation.item.added", previous_item_id=event.previous_item_id, item=item),
            self._event("conversation.item.done", previous_item_id=event.previous_item_id, item=item),
        ]

    def _response_done(self, event: ev.ResponseDone) -> list[Message]:
        item = {
            "id": event.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "completed" if event.status == "completed" else "incomplete",
            "content": [{"type": "output_text", "text": event.text}],
        }
        details: dict[str, Any] | None = None
        if event.status == "cancelled":
            details = {"type": "cancelled", "reason": "turn_detected"}
        elif event.status == "failed":
            details = {"type": "failed", "error": {"type": "backend_error", "message": event.error}}
        usage = event.usage
        response = {
            "id": event.response_id,
            "object": "realtime.response",
            "status": event.status,
            "status_details": details,
            "output": [item],
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        }
        done = self._event("response.done", response=response)
        if event.status != "completed":
            return [done]
        text_done = self._event(
            "response.output_text.done",
            response_id=event.response_id,
            item_id=event.item_id,
            output_index=0,
            content_index=0,
            text=event.text,
        )
        return [text_done, done]

    def _transcription(self, stage: str, item_id: str, **fields: Any) -> Message:
        return self._event(
            f"conversation.item.input_audio_transcription.{stage}", item_id=item_id, content_index=0, **fields
        )

    @staticmethod
    def _event(kind: str, **fields: Any) -> Message:
        return {"type": kind, "event_id": new_id("event"), **fields}
