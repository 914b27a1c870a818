"""Contract tests: requests generated from the app's own OpenAPI schema (schemathesis), sent to
the real app (its WSGI application, on PostgreSQL and Redis), every answer held to the schema.

One test per operation in the schema, so an endpoint added to the API is covered without a
line here. For each: the schema's examples, then inputs that fit the schema and inputs that do
not (wrong types, missing fields, hostile strings), a few of each, derandomised so a run is
reproducible. Every answer must be no 5xx, a status the operation documents, in the content
type and body shape the schema gives it, with the headers it says are required; an input the
schema refuses must be refused (4xx); a method a path does not document must be a 405.

The key is a TEST key with every scope: nothing is ever handed to SES. Every object a request
example names (a template by slug, a list by id…: SEEDERS) is made first, with that slug or id,
read from the schema's examples, so each documented example really does what it shows; the
documented example of each collection's POST is then sent once, and must work (a new kind of
reference fails here, loudly, until it is seeded). For a path with an id, the documented
examples and half the schema-valid calls use the id of the resource that POST made, so the
200 answers are held to the schema too; the other calls keep their generated ids (404).
"""

import itertools
import json
import os
import re
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
import schemathesis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.color import no_style
from django.core.wsgi import get_wsgi_application
from django.db import connection
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.generation.meta import CoverageScenario, TestPhase

from campaigns.apikeys import SCOPES, api_key_create
from campaigns.models import Campaign, Contact, ContactList, Membership
from templates_app.models import Template
from tests.factories import CampaignFactory, ContactFactory, ContactListFactory, TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)

# A few examples per operation and generation mode: the whole file in about a minute on the
# reference machine (2 cores), however many operations the schema has. CONTRACT_EXAMPLES=150
# asks for a deeper search, with a new random seed each run (a few minutes): it found faults
# the 8 derandomised ones did not (tests/api/test_nul_in_answers.py).
MAX_EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "8"))
DETERMINISTIC = "CONTRACT_EXAMPLES" not in os.environ


def _schema_document() -> dict:
    """The schema /api/schema/ serves, as JSON."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated, renderer_context={}))


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",  # inputs that fit the schema, and inputs that do not
            "max-examples": MAX_EXAMPLES,
            "deterministic": DETERMINISTIC,
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


def _request_examples() -> list[object]:
    """Every request example in the schema: bodies (all media types), and each parameter's
    as {its name: the value}."""
    operations = [
        operation
        for item in DOCUMENT["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
    ]
    bodies = [
        example.get("value")
        for operation in operations
        for media in operation.get("requestBody", {}).get("content", {}).values()
        for example in media.get("examples", {}).values()
    ]
    parameters = [
        {parameter["name"]: example.get("value")}
        for operation in operations
        for parameter in operation.get("parameters", [])
        for example in parameter.get("examples", {}).values()
    ]
    return bodies + parameters


def _seed_template(ref: str | int) -> None:
    """A template with this slug (text) or id (a number)."""
    TemplateFactory(
        **({"slug": ref} if isinstance(ref, str) else {"pk": ref, "slug": f"seeded-{ref}"}),
        subject="Hello {{ first_name }}",
        html="<p>Hello {{ first_name }}.</p>",
        text="Hello {{ first_name }}.",
    )


def _seed_list(pk: int) -> None:
    """A list with one subscribed contact: a campaign to it can be scheduled and sent."""
    seeded = ContactListFactory(pk=pk, name=f"Seeded list {pk}")
    Membership.objects.create(contact_list=seeded, contact=ContactFactory())


# The fields by which a request example names an existing object, and how one is made with the
# value it names (a template by slug or id, the others by id; "lists" a list of ids). A field
# added to an example with a new kind of reference makes its example fail below (`api_key`, or
# the example's own call), with the API's own 422 (`list_not_found`…): add its seeder here.
SEEDERS: dict[str, tuple[type, Callable[[object], object]]] = {
    "template": (Template, _seed_template),
    "list": (ContactList, _seed_list),
    "lists": (ContactList, _seed_list),
    "contact": (Contact, lambda pk: ContactFactory(pk=pk)),
    "campaign": (Campaign, lambda pk: CampaignFactory(pk=pk)),
}


def _references(value: object, found: dict[str, set]) -> dict[str, set]:
    """{field: the values it names} for the SEEDERS' fields anywhere in `value` (nested
    objects too: a bulk upsert's contacts, a job's rows)."""
    if isinstance(value, list):
        for item in value:
            _references(item, found)
    elif isinstance(value, dict):
        for name, item in value.items():
            if name in SEEDERS and isinstance(item, str | int):
                found.setdefault(name, set()).add(item)
            elif name in SEEDERS and isinstance(item, list):
                found.setdefault(name, set()).update(i for i in item if isinstance(i, int))
            else:
                _references(item, found)
    return found


def _seed_examples() -> dict[str, set]:
    """Make every object the request examples name, with the id (or slug) they name it by."""
    named = _references(_request_examples(), {})
    models = set()
    for name, values in sorted(named.items()):
        model, seed = SEEDERS[name]
        for value in sorted(values, key=str):
            if not model.objects.filter(**_lookup(model, value)).exists():
                seed(value)
        models.add(model)
    # Rows made with their own ids leave the id sequences behind: set them past those ids, so
    # the API's own inserts (the examples' POSTs) do not collide with them.
    with connection.cursor() as cursor:
        for statement in connection.ops.sequence_reset_sql(no_style(), sorted(models, key=str)):
            cursor.execute(statement)
    return named


def _lookup(model: type, value: object) -> dict:
    return {"slug": value} if isinstance(value, str) else {"pk": value}


@pytest.fixture
def api_secret(settings, empty_broker) -> str:
    """A test key with every scope (its secret), and every object the examples name."""
    settings.API_RATE_LIMIT_PER_SECOND = 0  # answers, not 429s, for every generated request
    _seed_examples()
    return api_key_create(name="contract", scopes=tuple(SCOPES), test=True).secret


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def api_key(api_secret):
    """The key's secret, and, for each collection whose POST has a documented example, the
    resource made with it: {collection path: its id}."""
    client = _client(api_secret)
    made = {}
    for path in DOCUMENT["paths"]:
        body = _example_body(path) if "{" not in path else None
        if body is not None:
            answer = client.post(path, body, format="json")
            # Every object an example names is seeded: an example that does not work here
            # names something new (add it to SEEDERS) or is wrong (mend the example).
            assert answer.status_code < 300, f"POST {path}'s example: {answer.content}"
            if isinstance(answer.json().get("id"), int):
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
    example = case.meta is not None and (
        case.meta.phase.name == TestPhase.EXAMPLES
        or getattr(case.meta.phase.data, "scenario", None) == CoverageScenario.EXAMPLE_VALUE
    )
    if (example or (positive and call % 2)) and "id" in (case.path_parameters or {}):
        # A documented example, and half the schema-valid calls: a resource that exists, if
        # its collection's example made one (a schema-violating call keeps its own id: that
        # may be what it violates the schema with).
        case.path_parameters["id"] = made.get(collection, case.path_parameters["id"])
    answer = case.call_and_validate(headers={"Authorization": f"Bearer {secret}"})
    if example and answer.status_code == 422:
        codes = [problem["code"] for problem in answer.json()["errors"]]
        assert not any(code.endswith("_not_found") for code in codes), (
            f"{case.method} {case.path}'s example names what is not seeded (SEEDERS): {answer.text}"
        )


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


def _file_examples() -> list[tuple[str, str, object]]:
    """(path, media type, example) for every documented POST body that is not JSON (a CSV
    body, a multipart upload): the schemathesis run may not send them as a client would."""
    return [
        (path, media_type, example["value"])
        for path, item in DOCUMENT["paths"].items()
        for media_type, media in item.get("post", {})
        .get("requestBody", {})
        .get("content", {})
        .items()
        if media_type != "application/json"
        for example in media.get("examples", {}).values()
    ]


def _component(schema: dict) -> dict:
    name = schema.get("$ref", "").rpartition("/")[2]
    return DOCUMENT["components"]["schemas"][name] if name else schema


@pytest.mark.parametrize(("path", "media_type", "value"), _file_examples())
def test_a_documented_file_example_is_accepted(path, media_type, value, api_secret):
    """A CSV body (its other fields as the query parameters' examples) or a multipart upload
    (a binary field's text as a file), as documented: accepted, the rows it shows made."""
    operation = DOCUMENT["paths"][path]["post"]
    client = _client(api_secret)
    files: set[str] = set()
    if media_type == "text/csv":
        query = {
            parameter["name"]: next(iter(parameter["examples"].values()))["value"]
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "query" and parameter.get("examples")
        }
        answer = client.post(f"{path}?{urlencode(query)}", value.encode(), content_type=media_type)
    else:
        properties = _component(operation["requestBody"]["content"][media_type]["schema"])
        files = {
            name
            for name, field in properties["properties"].items()
            if field.get("format") == "binary"
        }
        form = {
            name: SimpleUploadedFile(f"{name}.csv", item.encode()) if name in files else item
            for name, item in value.items()
        }
        answer = client.post(path, form, format="multipart")
    assert 200 <= answer.status_code < 300, answer.content
    csv_text = value if isinstance(value, str) else next(value[name] for name in files)
    assert answer.json()["rows"] == csv_text.count("\n") - 1  # lines after the header
