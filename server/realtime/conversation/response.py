"""One response of a conversation session: a streamed vLLM chat completion turned into output
items (an assistant message, function calls) as OpenAI's Realtime protocol reports them.

The response reports what happens as core events (`server.realtime.events`): it started, an
output item began, text or arguments grew, the item finished, the response finished. A forced
`tool_choice` (see `tools`) streams nothing while vLLM writes the call; the call is reported
whole once it is complete. `cancel()` ends the response at once (`response.done` with status
`cancelled`) and aborts its vLLM request; a response always finishes exactly once.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from server.backend.model_names import ModelNames
from server.backend.vllm_client import LIVE_PRIORITY, ChatDelta, VLLMClient
from server.core import metrics
from server.core.errors import APIError
from server.core.usage import StreamUsage
from server.realtime.config import FunctionTool
from server.realtime.conversation.items import FunctionCall, Item, Message, OutputText, ResponseState
from server.realtime.conversation.prompt import PromptSettings, chat_request
from server.realtime.conversation.tools import new_call_id, parse_call
from server.realtime.events import (
    Event,
    FunctionArgumentsDelta,
    OutputItemFinished,
    OutputItemStarted,
    OutputTextDelta,
    ResponseFinished,
    ResponseStarted,
)
from server.realtime.ids import new_id

log = logging.getLogger("edge.realtime")


class Response:
    """`on_item(item)` is called as each output item begins (a conversation response adds it to the
    conversation there); `on_finished(state)` once at the end."""

    def __init__(
        self,
        state: ResponseState,
        items: list[Item],
        prompt: PromptSettings,
        *,
        backend: VLLMClient,
        models: ModelNames,
        emit: Callable[[Event], None],
        on_item: Callable[[Item], str | None],
        on_finished: Callable[[ResponseState], None],
    ) -> None:
        self.state = state
        self._items = items
        self._prompt = prompt
        self._forced: tuple[FunctionTool, ...] = ()
        self._backend = backend
        self._models = models
        self._emit = emit
        self._on_item = on_item
        self._on_finished = on_finished
        self._usage = StreamUsage()
        self._message: Message | None = None
        self._calls: dict[int, FunctionCall] = {}  # vLLM's tool call index → the call
        self._forced_text: list[str] = []
        self._started = time.monotonic()
        self._sent: float | None = None  # when the chat request went to vLLM
        self._first_delta_s: float | None = None
        emit(ResponseStarted(state))
        self.task = asyncio.create_task(self._run(), name=f"realtime-response-{state.id}")

    @property
    def finished(self) -> bool:
        return self.state.status != "in_progress"

    def cancel(self, reason: str) -> None:
        """End it now as `cancelled` (`turn_detected` or `client_cancelled`); its request is aborted."""
        if not self.finished:
            self.task.cancel()
            self._finish("cancelled", reason=reason)

    async def _run(self) -> None:
        try:
            context = await self._models.context_length()
            request = chat_request(self._items, replace(self._prompt, context_tokens=context))
            self._forced = request.forced_tools
            body = {**request.body, "model": await self._models.served()}
            deltas = self._backend.chat_deltas(body, self._usage, priority=LIVE_PRIORITY)
            self._sent = time.monotonic()
            finish_reason = None
            async with aclosing(deltas) as stream:
                async for delta in stream:
                    self._take(delta)
                    finish_reason = delta.finish_reason or finish_reason
            if self._forced and finish_reason != "length":  # a call cut short by the token limit is no call
                self._forced_call()
        except APIError as exc:
            log.warning("response %s failed: %s", self.state.id, exc.message)
            self._finish("failed", error=(exc.code or "backend_error", exc.message))
            return
        except Exception:
            log.exception("response %s crashed", self.state.id)
            self._finish("failed", error=("server_error", "The server failed to make this response."))
            return
        if finish_reason == "length":
            self._finish("incomplete", reason="max_output_tokens")
        else:
            self._finish("completed")

    def _take(self, delta: ChatDelta) -> None:
        if (delta.text or delta.tool_calls) and self._first_delta_s is None:
            self._observe_first_delta()
        if delta.text:
            if self._forced:
                self._forced_text.append(delta.text)
            else:
                self._text(delta.text)
        for piece in delta.tool_calls:
            self._tool_call_piece(piece)

    def _observe_first_delta(self) -> None:
        now = time.monotonic()
        self._first_delta_s = now - self._started
        backend_s = now - (self._sent or now)
        metrics.RESPONSE_FIRST_DELTA_SECONDS.labels("total").observe(self._first_delta_s)
        metrics.RESPONSE_FIRST_DELTA_SECONDS.labels("backend").observe(backend_s)
        metrics.RESPONSE_FIRST_DELTA_SECONDS.labels("edge").observe(self._first_delta_s - backend_s)

    def _text(self, text: str) -> None:
        if self._message is None:
            self._message = Message(new_id("item"), "assistant", [OutputText()], status="in_progress")
            self._start_item(self._message)
        part = self._message.content[0]
        assert isinstance(part, OutputText)
        part.text += text
        self._emit(OutputTextDelta(self.state.id, self._message.id, self._index(self._message), text))

    def _tool_call_piece(self, piece: dict[str, Any]) -> None:
        index = piece.get("index", 0)
        function = piece.get("function") or {}
        call = self._calls.get(index)
        if call is None:
            self._end_message()  # text before a call is a message of its own
            call = FunctionCall(new_id("item"), new_call_id(), function.get("name") or "", status="in_progress")
            self._calls[index] = call
            self._start_item(call)
        if arguments := function.get("arguments"):
            call.arguments += arguments
            self._emit(FunctionArgumentsDelta(self.state.id, call, self._index(call), arguments))

    def _forced_call(self) -> None:
        """The model's constrained output as the function call it stands for."""
        text = "".join(self._forced_text)
        try:
            name, arguments = parse_call(text, self._forced)
        except ValueError as exc:
            raise APIError(
                502, f"The model's forced function call could not be read ({exc}).", code="invalid_function_call"
            ) from None
        call = FunctionCall(new_id("item"), new_call_id(), name, status="in_progress")
        self._start_item(call)
        call.arguments = arguments
        self._emit(FunctionArgumentsDelta(self.state.id, call, self._index(call), arguments))

    def _start_item(self, item: Item) -> None:
        self.state.output.append(item)
        previous = self._on_item(item)
        self._emit(OutputItemStarted(self.state, item, self._index(item), previous))

    def _index(self, item: Item) -> int:
        return next(i for i, existing in enumerate(self.state.output) if existing is item)

    def _end_message(self) -> None:
        if self._message is not None and self._message.status == "in_progress":
            self._end_item(self._message, "completed")

    def _end_item(self, item: Item, status: str) -> None:
        item.status = status  # type: ignore[assignment]  # one of the item statuses
        self._emit(OutputItemFinished(self.state, item, self._index(item)))

    def _finish(self, status: str, *, reason: str | None = None, error: tuple[str, str] | None = None) -> None:
        item_status = "completed" if status == "completed" else "incomplete"
        for item in self.state.output:
            if item.status == "in_progress":
                self._end_item(item, item_status)
        self.state.status = status  # type: ignore[assignment]  # checked by the protocol's models
        self.state.reason = reason  # type: ignore[assignment]
        self.state.error = error
        self.state.usage.input_tokens = self._usage.input_tokens
        self.state.usage.output_tokens = self._usage.output_tokens
        metrics.REALTIME_RESPONSES.labels(status).inc()
        total_s = time.monotonic() - self._started
        first = "-" if self._first_delta_s is None else f"{self._first_delta_s * 1000:.0f} ms"
        log.info(
            "response %s %s: first delta %s, %.0f ms in all, %d output items, %d+%d tokens%s",
            self.state.id,
            status if reason is None else f"{status} ({reason})",
            first,
            total_s * 1000,
            len(self.state.output),
            self._usage.input_tokens,
            self._usage.output_tokens,
            "" if error is None else f": {error[1]}",
        )
        self._emit(ResponseFinished(self.state))
        self._on_finished(self.state)
