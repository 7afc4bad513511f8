"""A session's conversation: its items in order, within a memory bound.

Items are inserted after a given item (`previous_item_id`; None appends, `"root"` puts it first)
and found, retrieved and deleted by id. What the conversation holds stays within `max_bytes`: when
an item would take it beyond, the oldest items are dropped first (the caller tells the client
which), never the item just added. A user turn's audio is let go once the turn has a transcript
and `audio_turns` later audio turns exist: a prompt sends only the latest turns as audio.
"""

from collections.abc import Iterator

from server.core.errors import APIError
from server.realtime.conversation.items import InputAudio, Item, Message, item_bytes

ROOT = "root"


class Conversation:
    def __init__(self, *, max_bytes: int, audio_turns: int) -> None:
        self._items: list[Item] = []
        self._max_bytes = max_bytes
        self._audio_turns = audio_turns

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def last_id(self) -> str | None:
        return self._items[-1].id if self._items else None

    def bytes(self) -> int:
        return sum(item_bytes(item) for item in self._items)

    def get(self, item_id: str) -> Item:
        for item in self._items:
            if item.id == item_id:
                return item
        raise APIError(
            400,
            f"The conversation has no item `{item_id}`.",
            param="item_id",
            code="item_not_found",
        )

    def check_new(self, item: Item, previous_item_id: str | None) -> None:
        """Raise the error `insert` would raise, without inserting."""
        if any(existing.id == item.id for existing in self._items):
            raise APIError(
                400, f"The conversation already has an item `{item.id}`.", param="item.id", code="item_id_in_use"
            )
        if previous_item_id not in (None, ROOT) and not any(i.id == previous_item_id for i in self._items):
            raise APIError(
                400,
                f"The conversation has no item `{previous_item_id}` to insert after.",
                param="previous_item_id",
                code="item_not_found",
            )

    def insert(self, item: Item, previous_item_id: str | None = None) -> tuple[str | None, list[str]]:
        """Insert `item`; return the id of the item before it and the ids of items dropped to make room."""
        self.check_new(item, previous_item_id)
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == ROOT:
            index = 0
        else:
            index = next(i for i, existing in enumerate(self._items) if existing.id == previous_item_id) + 1
        self._items.insert(index, item)
        before = self._items[index - 1].id if index > 0 else None
        self._release_audio()
        return before, self._bound(keep=item)

    def delete(self, item_id: str) -> None:
        self._items.remove(self.get(item_id))

    def transcribed(self, item_id: str, transcript: str) -> None:
        """A user turn's transcript arrived (its item may be gone: deleted, or dropped for room)."""
        for item in self._items:
            if item.id == item_id and isinstance(item, Message):
                for part in item.content:
                    if isinstance(part, InputAudio):
                        part.transcript = transcript
        self._release_audio()

    def _release_audio(self) -> None:
        later_turns = 0
        for item in reversed(self._items):
            audio = [p for p in item.content if isinstance(p, InputAudio)] if isinstance(item, Message) else []
            if not audio:
                continue
            if later_turns >= self._audio_turns:
                for part in audio:
                    if part.transcript is not None:
                        part.samples = None
            later_turns += 1

    def _bound(self, keep: Item) -> list[str]:
        dropped: list[str] = []
        size = self.bytes()
        while size > self._max_bytes and self._items and self._items[0] is not keep:
            oldest = self._items.pop(0)
            size -= item_bytes(oldest)
            dropped.append(oldest.id)
        return dropped
