"""The OpenAPI schema (/api/schema/) and its docs pages (docs/API.md#openapi-schema-and-docs).

The schema is generated from the views: any endpoint whose schema is not clean (a view
spectacular cannot read, an operation id numbered apart, a field it must guess) fails
test_the_schema_validates_without_a_warning, so a new endpoint is documented or CI is red.
"""

import inspect
import re
from datetime import datetime

import jsonschema
import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from campaigns.api.base import ApiView

pytestmark = pytest.mark.django_db

_METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    """The schema as `manage.py spectacular --validate --fail-on-warn` writes it: the command
    fails (SystemExit/SchemaGenerationError) on any warning or error, or if the schema is not
    a valid OpenAPI 3 document."""
    path = tmp_path_factory.mktemp("schema") / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method in _METHODS:
            if method in item:
                yield path, method, item[method]


def _api_views():
    """Every ApiView routed under /api/v1/, with its route."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                # An APIView's as_view() sets view_class, a ViewSet's (a router's route) cls.
                callback = pattern.callback
                view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
                if view is not None and issubclass(view, ApiView):
                    yield prefix + str(pattern.pattern), view

    return [
        (route, view)
        for route, view in walk(get_resolver().url_patterns)
        if route.startswith("api/v1/") and view.schema is not None
    ]


def test_the_schema_validates_without_a_warning(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["paths"], "no endpoint in the schema"


def _route_path(route: str) -> str:
    """A route as the schema's path with its parameters blank: `api/v1/jobs/<int:pk>` and a
    router's `api/v1/contacts/^(?P<pk>[^/.]+)/$` alike."""
    path = re.sub(r"<(?:\w+:)?\w+>|\(\?P<\w+>[^)]*\)", "{}", route)
    return "/" + re.sub(r"\^|\$|\\Z", "", path)


def test_every_endpoint_is_in_the_schema(schema):
    documented = {re.sub(r"\{[^}]+\}", "{}", path) for path in schema["paths"]}
    for route, view in _api_views():
        if "(?P<format>" in route:
            continue  # a router's format-suffix twin: the schema describes JSON
        path = _route_path(route)
        assert path in documented, f"{view.__name__} ({route}) is not in the schema"


def test_every_operation_says_its_scope_and_shared_errors(schema):
    ids = []
    for path, method, operation in _operations(schema):
        where = f"{method.upper()} {path}"
        ids.append(operation["operationId"])
        assert not re.search(r"_\d+$", operation["operationId"]), where
        assert re.fullmatch(r"[a-z:]+", operation["x-scope"]), where
        assert f"**Scope:** `{operation['x-scope']}`" in operation["description"], where
        assert operation["security"] == [{"apiKey": []}], where
        assert operation["tags"] == [path.split("/")[3]], where  # /api/v1/<resource>/…
        responses = operation["responses"]
        for status in ("401", "403", "429"):
            assert responses[status]["content"]["application/json"]["schema"]["$ref"] in (
                "#/components/schemas/Errors",
                "#/components/schemas/JobErrors",
            ), where
        assert responses["429"]["headers"]["Retry-After"]["required"] is True, where
        assert ("404" in responses) == ("{" in path), where
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(responses), where
        assert "405" not in responses, where  # a documented method never answers it
        assert any(status.startswith("2") for status in responses), where
        assert all(response["description"] for response in responses.values()), where
        assert "format" not in {p["name"] for p in operation.get("parameters", [])}, where
    assert len(ids) == len(set(ids))
    assert schema["components"]["securitySchemes"] == {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key made in the admin: `Authorization: Bearer mw_live_…`.",
        }
    }


def test_an_idempotent_post_documents_its_key_and_replay(schema):
    for path, method in (("/api/v1/messages", "post"), ("/api/v1/jobs", "post")):
        operation = schema["paths"][path][method]
        headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
        assert headers["Idempotency-Key"]["schema"]["pattern"] == "^[ -~]{1,255}$"
        responses = operation["responses"]
        assert "Idempotent-Replayed" in responses["202"]["headers"]
        assert "409" in responses and "400" in responses
        assert "Idempotent-Replayed" not in responses["422"].get("headers", {})
    listing = schema["paths"]["/api/v1/messages"]["get"]
    assert "Idempotency-Key" not in {p["name"] for p in listing.get("parameters", [])}


def _media(operation: dict, *, errors: bool = False):
    """(where, media type, its entry) of the operation's request body and 2xx answers (and,
    with `errors`, its other answers)."""
    for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
        yield "request", media_type, media
    for status, response in operation["responses"].items():
        if errors or status.startswith("2"):
            for media_type, media in response.get("content", {}).items():
                yield status, media_type, media


def _examples(media: dict) -> list:
    examples = [example["value"] for example in media.get("examples", {}).values()]
    return examples + ([media["example"]] if "example" in media else [])


def test_every_body_has_an_example(schema):
    """An integrator reads what to send and what comes back from /api/docs/: every
    operation's request body, in each media type it takes (a CSV body, a multipart upload),
    and 2xx answer with a body shows one."""
    missing = []
    for path, method, operation in _operations(schema):
        where = f"{operation['operationId']} ({method.upper()} {path})"
        request = operation.get("requestBody", {}).get("content", {})
        for media_type, media in request.items():
            if not _examples(media):
                missing.append(f"{where}: its {media_type} request body")
        for status, media_type, media in _media(operation):
            if media_type == "application/json" and not _examples(media):
                missing.append(f"{where}: {status} {media_type}")
    assert not missing, "\n".join(missing)


def _strict(node):
    """An OpenAPI 3.0 schema as JSON Schema (nullable: a null is one of its values), held
    tighter than the document says: an object with properties has no others, so an example
    with a field the serializer does not have (a typo, an invented one) fails."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {name: _strict(value) for name, value in node.items()}
    if "properties" in converted and "additionalProperties" not in converted:
        converted["additionalProperties"] = False
    if converted.pop("nullable", False):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value) -> bool:
    # (jsonschema checks date-time only with an optional package: this is Python's reading.)
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


def test_every_example_fits_its_schema(schema):
    """Every example (requests, answers, errors) against its media type's schema, its
    $refs resolved against the document's components: an example that drifts from its
    serializer (a field renamed, one missing, a wrong type) fails here, not in a reader's
    client."""
    components = _strict(schema["components"])
    checked = 0
    failures = []
    for _path, _method, operation in _operations(schema):
        for where, media_type, media in _media(operation, errors=True):
            # The components beside the schema: "#/components/schemas/X" resolves in it.
            validator = jsonschema.Draft202012Validator(
                {"allOf": [_strict(media["schema"])], "components": components},
                format_checker=_FORMATS,
            )
            for value in _examples(media):
                checked += 1
                for problem in validator.iter_errors(value):
                    path_in = "/".join(str(part) for part in problem.absolute_path)
                    failures.append(
                        f"{operation['operationId']} {where} {media_type} at "
                        f"/{path_in}: {problem.message}"
                    )
    assert checked > 0
    assert not failures, "\n".join(failures)


def test_every_view_that_takes_an_idempotency_key_says_so():
    """The marker is what the schema reads: a view handing its POST to idempotent_response
    without it would take a header its documentation does not mention."""
    for route, view in _api_views():
        # Its methods' source (a class made by a factory function has no source of its own),
        # and that of its module's functions they call (a POST may hand over to one, as
        # messages' does to message_post, which the lean route calls too).
        methods = [
            value
            for klass in view.__mro__[: view.__mro__.index(ApiView)]
            for value in vars(klass).values()
            if inspect.isfunction(value)
        ]
        source = "".join(inspect.getsource(method) for method in methods)
        module = inspect.getmodule(view)
        source += "".join(
            inspect.getsource(value)
            for name, value in vars(module).items()
            if inspect.isfunction(value)
            and value.__module__ == module.__name__
            and f"{name}(" in source
        )
        uses = "idempotent_response(" in source or "_idempotent(" in source
        assert uses == (getattr(view, "idempotent", False) is True), f"{view.__name__} ({route})"


def test_lists_are_pages_of_results_and_next(schema):
    components = schema["components"]["schemas"]
    for name in ("MessagePage", "JobPage"):
        page = components[name]
        assert page["required"] == ["next", "results"] or set(page["required"]) == {
            "next",
            "results",
        }
        assert page["properties"]["next"]["nullable"] is True
        assert page["properties"]["results"]["type"] == "array"
    listing = schema["paths"]["/api/v1/messages"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"limit", "cursor", "reference", "status", "since", "template"} <= names


def test_the_job_upload_is_described_as_the_view_takes_it(schema):
    body = schema["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data", "text/csv"}
    assert body["text/csv"]["schema"] == {"type": "string", "format": "binary"}
    upload = schema["components"]["schemas"]["JobCreateUploadRequest"]
    assert upload["properties"]["file"] == {
        "type": "string",
        "format": "binary",
        "description": upload["properties"]["file"]["description"],
    }


def test_the_schema_is_served_to_anyone():
    answer = APIClient().get("/api/schema/", HTTP_AUTHORIZATION="Bearer not-a-key")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("application/vnd.oai.openapi")
    assert b"/api/v1/messages" in answer.content


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_the_docs_pages_load_everything_from_our_static_files(client, page):
    answer = client.get(page)
    assert answer.status_code == 200
    html = answer.content.decode()
    assert "/api/schema/" in html
    sources = re.findall(r'<(?:script|link|img)\b[^>]*?\b(?:src|href)="([^"]+)"', html)
    assert any(source.endswith(".js") for source in sources), sources
    for source in sources:
        assert source.startswith("/static/drf_spectacular_sidecar/"), source
        assert finders.find(source.removeprefix("/static/")), f"{source} is not collected"
    # Nothing else on the page names another site (fonts, a validator badge, a CDN).
    assert not re.search(r"https?://", html), re.findall(r"https?://\S+", html)
