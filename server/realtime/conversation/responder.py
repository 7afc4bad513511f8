"""A conversation session's conversation: its items, and the responses made from them.

The session hands it each user turn as it is committed (`user_turn`), its transcript when it comes
(`transcribed`), and says when speech starts (`speech_started`: with `interrupt_response`, the
response in progress is cancelled) and when a turn ends (`turn_ended`: with `create_response`, a
response starts). Clients add, retrieve and delete items and create and cancel responses through
the protocol. One response runs at a time, as in OpenAI's: another `response.create` meanwhile is
refused (`conversation_already_has_active_response`).

A response in the conversation (`conversation: "auto"`) sees all its items and adds its output to
it; one outside it (`"none"`) sees only its own `input` (items, or references to the
conversation's) and leaves the conversation as it was.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from server.backend.model_names import ModelNames
from server.backend.vllm_client import VLLMClient
from server.core.errors import APIError
from server.realtime.config import MAX_REPLY_TOKENS, FunctionTool, SessionConfig, ToolChoice
from server.realtime.conversation.items import InputAudio, Item, Message, ResponseState
from server.realtime.conversation.prompt import PromptSettings
from server.realtime.conversation.response import Response
from server.realtime.conversation.store import Conversation
from server.realtime.events import Event, ItemAdded, ItemDeleted
from server.realtime.ids import new_id
from server.realtime.tasks import TaskSet


@dataclass(frozen=True)
class ItemReference:
    """An existing item, by id, in a response's `input`."""

    id: str


@dataclass(frozen=True)
class ResponseRequest:
    """`response.create`'s parameters; None takes the session's."""

    instructions: str | None = None
    tools: tuple[FunctionTool, ...] | None = None
    tool_choice: ToolChoice | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] | None = None
    in_conversation: bool = True
    input: tuple[Item | ItemReference, ...] | None = None


class Responder:
    def __init__(
        self,
        config: Callable[[], SessionConfig],
        *,
        backend: VLLMClient,
        models: ModelNames,
        emit: Callable[[Event], None],
        max_bytes: int,
        audio_turns: int,
        default_max_tokens: int | None,
    ) -> None:
        self._config = config
        self._backend = backend
        self._models = models
        self._emit = emit
        self._audio_turns = audio_turns
        self._default_max_tokens = default_max_tokens
        self.items = Conversation(max_bytes=max_bytes, audio_turns=audio_turns)
        self._active: Response | None = None
        self._tasks = TaskSet()

    # The session's side -------------------------------------------------------------------------

    def user_turn(self, item_id: str, samples: np.ndarray) -> None:
        """A committed turn joins the conversation (the session has announced it)."""
        message = Message(item_id, "user", [InputAudio.of(samples)])
        _, dropped = self.items.insert(message)
        self._dropped(dropped)

    def transcribed(self, item_id: str, transcript: str) -> None:
        self.items.transcribed(item_id, transcript)

    def speech_started(self) -> None:
        if self._config().turn.interrupt_response:
            self.cancel("turn_detected")

    def turn_ended(self) -> None:
        """A turn ended by turn detection: a response starts, if the session says so and none runs."""
        if self._config().turn.create_response and self._active is None:
            self.respond(ResponseRequest())

    # The client's side --------------------------------------------------------------------------

    def add(self, item: Item, previous_item_id: str | None) -> None:
        before, dropped = self.items.insert(item, previous_item_id)
        self._emit(ItemAdded(item, before))
        self._dropped(dropped)

    def get(self, item_id: str) -> Item:
        return self.items.get(item_id)

    def delete(self, item_id: str) -> None:
        self.items.delete(item_id)
        self._emit(ItemDeleted(item_id))

    def respond(self, request: ResponseRequest) -> None:
        if self._active is not None:
            raise APIError(
                400,
                f"The conversation already has an active response ({self._active.state.id}); cancel it or wait for "
                "its `response.done`.",
                code="conversation_already_has_active_response",
            )
        config = self._config().conversation
        items = self._input(request.input) if request.input is not None else []
        if request.in_conversation:
            items = [*self.items, *items]
        max_tokens = request.max_output_tokens or config.max_output_tokens or self._default_max_tokens
        prompt = PromptSettings(
            instructions=config.instructions if request.instructions is None else request.instructions,
            tools=config.tools if request.tools is None else request.tools,
            tool_choice=config.tool_choice if request.tool_choice is None else request.tool_choice,
            max_output_tokens=max_tokens or MAX_REPLY_TOKENS,
            context_tokens=None,
            audio_turns=self._audio_turns,
        )
        state = ResponseState(new_id("resp"), request.in_conversation, request.metadata, max_tokens)
        response = Response(
            state,
            items,
            prompt,
            backend=self._backend,
            models=self._models,
            emit=self._emit,
            on_item=self._output_item if request.in_conversation else lambda item: None,
            on_finished=self._finished,
        )
        self._active = response
        self._tasks.track(response.task)

    def cancel(self, reason: str, response_id: str | None = None) -> bool:
        """Cancel the active response (if `response_id` is given, only that one); False if none was."""
        active = self._active
        if active is None or (response_id is not None and active.state.id != response_id):
            return False
        active.cancel(reason)
        return True

    async def aclose(self) -> None:
        """The response in progress is cancelled, its vLLM request aborted."""
        self.cancel("client_cancelled")
        await self._tasks.aclose()

    def _input(self, entries: tuple[Item | ItemReference, ...]) -> list[Item]:
        return [self.items.get(entry.id) if isinstance(entry, ItemReference) else entry for entry in entries]

    def _output_item(self, item: Item) -> str | None:
        before, dropped = self.items.insert(item)
        self._dropped(dropped)
        return before

    def _finished(self, state: ResponseState) -> None:
        if self._active is not None and self._active.state is state:
            self._active = None

    def _dropped(self, item_ids: list[str]) -> None:
        """Items the conversation's memory bound dropped: the client is told, as for a delete."""
        for item_id in item_ids:
            self._emit(ItemDeleted(item_id))
