"""Fuzzing from the API's own description: schemathesis generates requests from `/openapi.json`
(valid and invalid bodies for every operation) and sends them to a live edge in front of the
session's real vLLM. No answer may be a 5xx, and every error has OpenAI's shape.

The number of examples per operation is bounded so the run takes a minute or two.
"""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.conftest import EdgeServer

MAX_EXAMPLES = 30


# Every operation of the OpenAPI document (checked below, so a new one is not left out).
OPERATIONS = [
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/translations"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
    ("POST", "/v1/realtime/client_secrets"),
    ("POST", "/v1/realtime/transcription_sessions"),
    ("POST", "/v1/realtime/calls"),
    ("POST", "/v1/realtime/calls/{call_id}/hangup"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
]


@pytest.fixture(scope="module")
def api_schema(edge: EdgeServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{edge.url}/openapi.json")


def openai_error_shape(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool:
    """An error answer is `{"error": {"message", "type", "param", "code"}}` with a message."""
    if response.status_code < 400:
        return True
    body = json.loads(response.content)
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    return True


def test_operations_are_all_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# Invalid requests are generated where there is a body to get wrong.
CASES = [(*op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (*op, GenerationMode.NEGATIVE) for op in OPERATIONS if op[0] == "POST"
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_no_server_errors_and_openai_shaped_errors(
    api_schema: schemathesis.BaseSchema, edge: EdgeServer, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=edge.url, checks=[not_a_server_error, openai_error_shape], timeout=120)

    check()
