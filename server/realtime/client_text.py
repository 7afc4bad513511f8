"""Reading client messages safely: JSON that cannot hurt the parser, and client text cut short
before it is repeated in an error (a client must not make the server echo megabytes)."""

import json
from typing import Any

from server.errors import APIError

SHOWN_CHARS = 64
MAX_ECHOED_ID_CHARS = 128


def parse_json(text: str) -> Any:
    """The message's JSON value; malformed or too deeply nested JSON is a 400 `invalid_json`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise APIError(400, "The message nests JSON too deeply.", code="invalid_json") from None
    except ValueError:
        raise APIError(400, "The message is not valid JSON.", code="invalid_json") from None


def shown(value: Any) -> str:
    """A client value for an error message, at most `SHOWN_CHARS` characters of it."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def echoed_id(value: Any) -> str | None:
    """A client's `event_id` to repeat in an error: a string of sensible length, else none."""
    return value if isinstance(value, str) and len(value) <= MAX_ECHOED_ID_CHARS else None
