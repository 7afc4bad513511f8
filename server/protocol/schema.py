"""Request bodies declared to the OpenAPI document from pydantic models.

The routes read their bodies themselves (a form or JSON, with OpenAI's error statuses), so FastAPI
cannot infer the request body; `request_body` describes it in the operation's `openapi_extra`.
"""

from typing import Any

from pydantic import BaseModel


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """Replace the `#/$defs/...` references pydantic emits with the definitions themselves.

    Inside the OpenAPI document `#` is the document, not the schema, so such references would
    dangle; the models have no recursive types, so inlining terminates.
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema (validation mode), self-contained."""
    schema = model.model_json_schema(mode="validation")
    definitions = schema.pop("$defs", {})
    return _inline(schema, definitions)


def request_body(content: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """`openapi_extra` for an operation whose body is one of `content` (media type → model)."""
    return {
        "requestBody": {
            "required": True,
            "content": {media_type: {"schema": model_schema(model)} for media_type, model in content.items()},
        }
    }
