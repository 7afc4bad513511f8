"""Read a request's body into plain fields: a JSON object, or a multipart/urlencoded form.

JSON is bounded in nesting depth (`MAX_JSON_DEPTH`): a body nested a thousand levels deep would
otherwise reach Python's recursion limit in the parser or in the code that walks it later. Form
keys in the OpenAI SDK's style (`key[]` for lists, `key[sub]` for objects) are folded into lists
and objects; a field sent twice is refused.
"""

import json
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request

from server.core.errors import APIError, bad_request

MAX_JSON_DEPTH = 64
# Form fields whose value is a list: repeated keys, with or without the SDK's `[]`, add items.
LIST_FIELDS = frozenset({"timestamp_granularities", "include"})


def _too_deep() -> APIError:
    return APIError(422, f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels.", code="invalid_json")


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` (parsed JSON) nests at most `limit` arrays/objects deep; walked without recursion."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return True


def bounded_depth(value: Any) -> Any:
    """`value` (parsed JSON) if it nests at most `MAX_JSON_DEPTH` deep; a 422 otherwise."""
    if not json_depth_ok(value):
        raise _too_deep()
    return value


def loads_bounded(text: str | bytes) -> Any:
    """`json.loads` that refuses nesting deeper than `MAX_JSON_DEPTH` (422) and malformed JSON (ValueError)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise _too_deep() from None
    return bounded_depth(value)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object (422 otherwise)."""
    try:
        body = loads_bounded(await request.body())
    except ValueError:
        raise APIError(422, "The JSON body is malformed.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(422, "The JSON body must be an object.", code="invalid_json")
    return body


def fold_form(form: FormData) -> dict[str, Any]:
    """Fold the SDK's `key[]` lists and `key[sub]` objects into plain values; empty values are absent."""
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if value == "":
            continue
        name = key.removesuffix("[]")
        if name in LIST_FIELDS:
            items = fields.setdefault(name, [])
            if isinstance(items, list):
                items.append(value)
                continue
        elif "[" in name and name.endswith("]"):
            outer, inner = name[:-1].split("[", 1)
            nested = fields.setdefault(outer, {})
            if isinstance(nested, dict) and inner not in nested:
                nested[inner] = value
                continue
            name = outer
        elif name not in fields:
            fields[name] = value
            continue
        raise bad_request(f"Field `{name}` was sent more than once.", param=name)
    return fields


async def read_fields(request: Request) -> dict[str, Any]:
    """The request's fields from a multipart/urlencoded form or a JSON object."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await read_json_object(request)
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=1, max_fields=100)
        except APIError:
            raise
        except Exception as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            raise APIError(422, f"The form body is malformed: {detail}", code="invalid_form") from None
        return fold_form(form)
    raise bad_request(
        "Send the request as multipart/form-data (with `file` or `url`) or as a JSON object (with `url`).",
        code="unsupported_content_type",
    )
