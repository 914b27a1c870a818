"""Contract tests: requests generated from the app's own OpenAPI schema (schemathesis), sent to
the real app (its WSGI application, on PostgreSQL and Redis), every answer held to the schema.

One test per operation in the schema, so an endpoint added to the API is covered without a
line here. For each: the schema's examples, then inputs that fit the schema and inputs that do
not (wrong types, missing fields, hostile strings), a few of each, derandomised so a run is
reproducible. Every answer must be no 5xx, a status the operation documents, in the content
type and body shape the schema gives it, with the headers it says are required; an input the
schema refuses must be refused (4xx); a method a path does not document must be a 405.

The key is a TEST key with every scope: nothing is ever handed to SES. Ids in paths are mostly
unknown ones (404); for a path with an id, one more call is made with the id of a resource the
documented example of its collection's POST made, so the 200 answers are held to the schema
too.
"""

import itertools
import json
import re

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.test import APIClient
from schemathesis import GenerationMode

from campaigns.apikeys import SCOPES, api_key_create
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)

# A few examples per operation and generation mode: the whole file in about a minute on the
# reference machine (2 cores), however many operations the schema has.
MAX_EXAMPLES = 8


def _schema_document() -> dict:
    """The schema /api/schema/ serves, as JSON."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated, renderer_context={}))


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",  # inputs that fit the schema, and inputs that do not
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",  # no .hypothesis folder in the tree
        },
        "checks": {
            "enabled": True,
            # Input the schema allows may still be refused by a rule no schema states (a
            # template that does not exist, a cursor this API did not give): a 4xx is right.
            "positive_data_acceptance": {"enabled": False},
        },
        "operations": [
            {
                # Its query parameters are a text/csv body's fields; a JSON or form body
                # carries its own and the query string is not read, so a wrong one there is
                # not refused. Every other check still applies.
                "include-path": "/api/v1/jobs",
                "include-method": "POST",
                "checks": {"negative_data_rejection": {"enabled": False}},
            }
        ],
    }
)
DOCUMENT = _schema_document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
schema.app = get_wsgi_application()
_IDEMPOTENCY_KEY = re.compile(r"[ -~]{1,240}")
_calls = itertools.count()


def _example_body(path: str) -> dict | None:
    """The first documented JSON example of POST `path`'s body, if it has one."""
    body = DOCUMENT["paths"].get(path, {}).get("post", {}).get("requestBody", {})
    examples = body.get("content", {}).get("application/json", {}).get("examples", {})
    return next(iter(examples.values()), {}).get("value")


def _collection(path: str) -> str:
    """/api/v1/jobs/{id}/cancel -> /api/v1/jobs: where the resource an id names is made."""
    return path.split("/{", 1)[0]


def _example_templates() -> set[str]:
    """The template slugs the schema's request examples name (`"template": "receipt"`)."""
    slugs = set()
    for item in DOCUMENT["paths"].values():
        for operation in item.values():
            content = (
                operation.get("requestBody", {}).get("content", {})
                if isinstance(operation, dict)
                else {}
            )
            for media in content.values():
                for example in media.get("examples", {}).values():
                    value = example.get("value")
                    if isinstance(value, dict) and isinstance(value.get("template"), str):
                        slugs.add(value["template"])
    return slugs


@pytest.fixture
def api_secret(settings, empty_broker) -> str:
    """A test key with every scope (its secret), and the templates the examples name."""
    settings.API_RATE_LIMIT_PER_SECOND = 0  # answers, not 429s, for every generated request
    for slug in sorted(_example_templates()):
        TemplateFactory(
            slug=slug,
            subject="Hello {{ first_name }}",
            html="<p>Hello {{ first_name }}.</p>",
            text="Hello {{ first_name }}.",
        )
    return api_key_create(name="contract", scopes=tuple(SCOPES), test=True).secret


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def api_key(api_secret):
    """The key's secret, and, for each collection whose POST has a documented example that
    works on this data, a resource made with it: {collection path: its id}."""
    client = _client(api_secret)
    made = {}
    for path in DOCUMENT["paths"]:
        body = _example_body(path) if "{" not in path else None
        if body is not None:
            answer = client.post(path, body, format="json")
            if answer.status_code < 300 and isinstance(answer.json().get("id"), int):
                made[path] = answer.json()["id"]
    return api_secret, made


@schema.parametrize()
@settings(
    deadline=None,
    # The key and templates are made once per operation and shared by its examples.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_operation_answers_as_its_schema_says(case, api_key):
    secret, made = api_key
    call = next(_calls)
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and _IDEMPOTENCY_KEY.fullmatch(key):
        # Generated keys repeat ("0", "00"…): a repeat with another body is a 409, which would
        # answer most POSTs before their body is read. Each valid key made unique (an invalid
        # one is left as it is: its 400 is tested).
        case.headers["Idempotency-Key"] = f"{key}-{call}"
    collection = _collection(case.path)
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and "id" in (case.path_parameters or {}) and collection in made and call % 2:
        # Half the schema-valid calls: a resource that exists (a schema-violating call keeps
        # its own id: that may be what it violates the schema with).
        case.path_parameters["id"] = made[collection]
    case.call_and_validate(headers={"Authorization": f"Bearer {secret}"})


def _idempotent_posts() -> list[str]:
    """The paths whose POST the schema says takes an Idempotency-Key."""
    return [
        path
        for path, item in DOCUMENT["paths"].items()
        if any(p["name"] == "Idempotency-Key" for p in item.get("post", {}).get("parameters", []))
    ]


@pytest.mark.parametrize("path", _idempotent_posts())
def test_a_documented_idempotency_key_replays_the_first_answer(path, api_secret):
    """What the schema says of the header, done: the same request again is the first answer
    (and makes nothing more); another request with the key is a 409."""
    body = _example_body(path)
    assert body is not None, f"POST {path} has no documented JSON example"
    client = _client(api_secret)
    first = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="contract-1")
    if first.status_code == 422:
        # An example may name what an empty database has not (a list's id): say so, loudly.
        pytest.skip(f"POST {path}'s example names what these tests do not make: {first.content}")
    assert 200 <= first.status_code < 300, first.content
    again = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="contract-1")
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again["Idempotent-Replayed"] == "true"
    # Another request: the example with its first text field changed, or else its first
    # yes/no flipped (a body refused as malformed may be answered 400 before its key is
    # looked at).
    changed = next(
        (
            {**body, name: value + "-other" if isinstance(value, str) else not value}
            for name, value in body.items()
            if isinstance(value, str | bool)
        ),
        None,
    )
    assert changed is not None, f"POST {path}'s example has no text or yes/no field to change"
    other = client.post(path, changed, format="json", HTTP_IDEMPOTENCY_KEY="contract-1")
    assert other.status_code == 409
    assert other.json()["errors"][0]["code"] == "idempotency_key_reused"
