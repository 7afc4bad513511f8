"""Reading client messages safely: JSON that cannot hurt the parser, and client text cut short
before it is repeated in an error (a client must not make the server echo megabytes)."""

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from server.core.errors import APIError

M = TypeVar("M", bound=BaseModel)

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


def validated(model: type[M], message: dict[str, Any]) -> M:
    """`message` parsed by `model`; its first error is a 400 whose code is the error's type and
    whose message is the error's (the model's validators write them for the client)."""
    try:
        return model.model_validate(message)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error["loc"])
        raise APIError(400, error["msg"], param=param, code=error["type"]) from None
