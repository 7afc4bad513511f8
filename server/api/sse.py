"""Server-sent events: framing one event, and regrouping a byte stream into whole events."""

import codecs
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any


def sse(event: dict[str, Any]) -> str:
    """One event as server-sent-event text: `data: {...}` and a blank line."""
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncGenerator[str, None]:
    """Regroup a byte stream of server-sent events into whole events, as text."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        *events, pending = pending.split("\n\n")
        for event in events:
            if event.strip():
                yield event + "\n\n"
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        yield pending
