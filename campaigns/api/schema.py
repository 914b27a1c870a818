"""What the OpenAPI schema (/api/schema/) says about every endpoint
(docs/API.md#openapi-schema-and-docs).

Views declare their own request and success bodies and their endpoint-specific errors
(`extend_schema(request=…, responses={200: X, **errors(404, 422)}, operation_id=…)`);
ApiAutoSchema adds, from the view itself, what every operation shares, so no view can forget
it and the schema cannot drift from the code that answers:

- the scope the method needs (the view's `scopes`): in the description, as `x-scope`, and the
  bearer security requirement;
- the errors in the one shape (campaigns.api.errors) that the machinery answers whatever the
  view: 401 and 403 (the key), 429 with Retry-After (the rate limit), 400/413/415 for an
  operation with a body (parsing, ApiView's body limit, the content type), 400 for one with
  query parameters, 404 for a path with an id;
- for a view with `idempotent = True`: the Idempotency-Key header on its POST, the
  Idempotent-Replayed header on its 2xx, and the 409 of a reused key
  (campaigns.api.idempotency);
- a tag per resource (the path's first segment under /api/v1/).

405 is not listed on any operation: a documented method never answers it; a method a path does
not document does (ApiView), which the contract tests check (tests/api/test_contract.py).
"""

from http import HTTPStatus

from drf_spectacular.drainage import warn
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="A stable code clients can branch on.")
    field = serializers.CharField(
        help_text='The request field at fault, dotted for nested ones; "" for the whole request.'
    )
    message = serializers.CharField(help_text="What went wrong, for people.")
    row = serializers.IntegerField(
        required=False, help_text="A job's row (from 1), for a row's error."
    )
    line = serializers.IntegerField(
        required=False, help_text="The CSV file's line, for a row of an uploaded CSV."
    )
    recipients = serializers.IntegerField(
        required=False,
        help_text="With audience_changed: the campaign's recipients now, to confirm again.",
    )


class ErrorsSerializer(serializers.Serializer):
    errors = ErrorSerializer(many=True)


ERROR_MEANINGS = {
    400: "The request is malformed (bad JSON, wrong types, unknown fields).",
    401: "No API key, or one that is not ours.",
    403: "The key lacks the scope, or is revoked or expired.",
    404: "No such resource (for this key).",
    405: "The endpoint does not answer this method.",
    409: "The resource's state refuses this change, or an Idempotency-Key was reused.",
    413: "The body is larger than this endpoint takes.",
    415: "The body is not in a content type this endpoint takes.",
    422: "The request is well-formed but its values are refused.",
    429: "Over the key's rate limit: retry after the Retry-After header's seconds.",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """`responses` entries for these error statuses, all in the one shape."""
    return {
        status: OpenApiResponse(response=ErrorsSerializer, description=ERROR_MEANINGS[status])
        for status in statuses
    }


class JobErrorsSerializer(ErrorsSerializer):
    """A job refused for its rows: the first errors, and how many there were in all."""

    error_count = serializers.IntegerField(
        required=False,
        help_text="How many errors the rows had in all (the first ones are listed).",
    )


def paginated(
    serializer_class: type[serializers.Serializer], item: str | None = None
) -> type[serializers.Serializer]:
    """The schema of a list endpoint's answer: a CursorPage (campaigns.api.pagination) of
    `serializer_class`'s items, `{"results": [...], "next": url | null}`. One component per
    item serializer, named for the item (`MessagePage` for `MessageSerializer`, or `item`'s
    name given: `paginated(ContactOut, "Contact")` is `ContactPage`), however many views use
    it:

        @extend_schema(responses={200: paginated(MessageSerializer)}, …)
    """
    found = _pages.get(serializer_class)
    if found is None:
        item = item or serializer_class.__name__.removesuffix("Serializer")
        name = item + "Page"
        found = type(
            f"{name}Serializer",
            (serializers.Serializer,),
            {
                "__module__": serializer_class.__module__,
                "__doc__": f"One page of {item} items, newest first.",
                "results": serializer_class(many=True),
                "next": serializers.URLField(
                    allow_null=True,
                    help_text="The next page's URL (your filters and an opaque cursor): follow "
                    "it as it is; null on the last page.",
                ),
            },
        )
        _pages[serializer_class] = found
    return found


_pages: dict[type, type] = {}


# The methods whose body a view reads (DRF parses one only for these).
_BODY_METHODS = ("POST", "PUT", "PATCH")
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Your own unique value for this request (a UUID is a good one): the same "
    "request with the same key within 24 hours gets the first answer again, with "
    "`Idempotent-Replayed: true`, and creates nothing (docs/API.md#idempotency).",
    pattern=r"^[ -~]{1,255}$",
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    enum=["true"],
    description="Present on a replay: this is the first answer to this Idempotency-Key.",
    response=True,  # narrowed to the 2xx statuses below
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    required=True,
    description="Whole seconds to wait before the next request with this key.",
    response=[429],
)
WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="`Bearer`: how to send a key.",
    response=[401],
)


class ApiAutoSchema(AutoSchema):
    """The project's schema class (REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS): the module's doc."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        scope = self.scope()
        if scope is None:
            # HasScope refuses such a method to everyone: a view must name each one's scope.
            warn(f"{self.view.__class__.__name__} names no scope for {self.method}.")
        else:
            line = f"**Scope:** `{scope}`."
            description = operation.get("description", "")
            operation["description"] = f"{description}\n\n{line}" if description else line
            operation["x-scope"] = scope
        return operation

    def scope(self) -> str | None:
        return getattr(self.view, "scopes", {}).get(self.method)

    def idempotent(self) -> bool:
        """Whether this operation takes an Idempotency-Key: a view that hands its POST to
        idempotent_response says so with `idempotent = True`."""
        return self.method == "POST" and getattr(self.view, "idempotent", False) is True

    def get_operation_id(self) -> str:
        # spectacular calls both GET /things and GET /things/{id} `things_retrieve` on a plain
        # APIView (then numbers them apart): a GET on a path without parameters is a list.
        if self.method == "GET" and "{" not in self.path:
            tokens = [t.replace("-", "_") for t in self._tokenize_path()] or ["root"]
            return "_".join([*tokens, "list"])
        return super().get_operation_id()

    def _get_format_parameters(self):
        # DRF's ?format=api is the browsable API (HTML, for people in a browser): not part of
        # the API the schema describes, which answers JSON.
        return []

    def _process_override_parameters(self, direction="request"):
        parameters = super()._process_override_parameters(direction)
        # A list's query serializer names `format` so it is not refused as unknown (above).
        parameters.pop(("format", OpenApiParameter.QUERY), None)
        for (_name, location), parameter in parameters.items():
            if location == OpenApiParameter.QUERY and parameter and not parameter.get("required"):
                # DRF reads an empty optional query value (`?cursor=`) as an absent one, as
                # HTML forms send them: say so rather than a minLength it does not apply.
                parameter["schema"].pop("minLength", None)
                parameter["allowEmptyValue"] = True
        return parameters

    def get_override_parameters(self):
        parameters = [*super().get_override_parameters(), RETRY_AFTER, WWW_AUTHENTICATE]
        if self.idempotent():
            parameters += [IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED]
        return parameters

    def _get_response_headers_for_code(self, status_code, direction="response"):
        headers = super()._get_response_headers_for_code(status_code, direction)
        if not str(status_code).startswith("2"):
            headers.pop(IDEMPOTENT_REPLAYED.name, None)
        return headers

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses  # a callback's (OpenApiCallback): the receiver's answers
        for status_code, response in errors(*self.error_statuses()).items():
            if str(status_code) not in responses:
                responses[str(status_code)] = self._get_response_for_code(
                    response, str(status_code), direction=direction
                )
        for status_code, response in responses.items():
            if not response.get("description") and status_code.isdigit():
                # A description is what Swagger UI and Redoc show beside the status.
                response["description"] = HTTPStatus(int(status_code)).phrase
        return dict(sorted(responses.items()))

    def error_statuses(self) -> list[int]:
        """The errors this operation can answer whatever its view does (the module's doc)."""
        statuses = [401, 403, 429]
        has_body = self.method in _BODY_METHODS and self._get_request_body() is not None
        has_query = any(
            name_location[1] == OpenApiParameter.QUERY
            for name_location in self._process_override_parameters()
        )
        if has_body or has_query or self.idempotent():
            statuses.append(400)
        if has_body:
            statuses += [413, 415]
        if "{" in self.path:
            statuses.append(404)
        if self.idempotent():
            statuses.append(409)
        return sorted(statuses)


def answer_example(name: str, value: dict, status_code: str = "200") -> OpenApiExample:
    """An example of an operation's answer (not of its request) for this status."""
    return OpenApiExample(name, value=value, response_only=True, status_codes=[status_code])
