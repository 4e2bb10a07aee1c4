"""Fuzz the API from its own OpenAPI schema, in process (ASGI), against the template in moto.

Every operation gets generated requests, valid and not. No response may be a 5xx, and every
response must be declared in the schema (status, content type, headers, body). With a token
configured, `ignored_auth` also checks that each protected operation refuses an anonymous call.
"""

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import app
from tests.support import AwsStack, compose

TOKEN = "fuzz-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]

schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def api_with_token(aws: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsStack]:
    monkeypatch.setenv("OFFLOAD_API_TOKEN", TOKEN)
    compose(monkeypatch)
    yield aws


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, api_with_token: AwsStack) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
