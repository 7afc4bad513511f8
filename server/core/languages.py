"""The language codes the edge accepts, for HTTP requests and realtime sessions alike."""

from typing import Any

import pycountry

from server.core.errors import InputError


def language_code(value: Any) -> str | None:
    """An ISO-639-1 code, lower-cased; None or "" mean none. Anything else raises `InputError`."""
    if value in (None, ""):
        return None
    code = str(value).strip().lower()
    if len(code) != 2 or pycountry.languages.get(alpha_2=code) is None:
        raise InputError(
            f"`language` must be an ISO-639-1 code such as 'en' or 'fr', not {_shown(value)}.",
            code="unsupported_language",
        )
    return code


def _shown(value: Any, limit: int = 40) -> str:
    """The value as the client sent it, cut short: an error must not echo unbounded client text."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
