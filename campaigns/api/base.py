"""What every API view shares: a body limit of its own, a JSON parser that cannot 500, and
a 405 before the scope check (docs/API.md#errors).

Every endpoint subclasses ApiView and sets `max_body_bytes` to what its largest honest request
needs (a message: 1 MB; a job of 100,000 rows: more). config.request_limits refuses anything
over MAX_REQUEST_BYTES for the whole site before a view runs; this is the tighter, per-view one.
"""

from rest_framework import exceptions, parsers
from rest_framework.views import APIView

# The largest id there is (a bigint): a larger number names nothing, and is never sent to the
# database, which would refuse it (a 500) rather than find nothing.
MAX_ID = 2**63 - 1
# A message's request is a template, an address, a reference and at most 64 kB of
# personalisation (campaigns.transactional): 1 MB leaves room for escapes and whitespace.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "request_too_large"
    default_detail = "The request body is too large."


class JsonParser(parsers.JSONParser):
    """DRF's, with every way a body can fail to parse as a 400 `invalid_json`: a nesting too
    deep for the parser (`[[[[…` raises RecursionError, not ValueError) included."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except exceptions.ParseError as err:
            raise exceptions.ParseError(_parse_message(err), code="invalid_json") from None
        except RecursionError:
            raise exceptions.ParseError(
                "The body is not valid JSON: it is nested too deeply.", code="invalid_json"
            ) from None


def _parse_message(err: exceptions.ParseError) -> str:
    # DRF's "JSON parse error - Expecting value: line 1 column 1 (char 0)": a position, never
    # the body's text.
    detail = str(err.detail).removeprefix("JSON parse error - ")
    return f"The body is not valid JSON: {detail}"


class ApiView(APIView):
    parser_classes = [JsonParser]
    max_body_bytes = DEFAULT_MAX_BODY_BYTES

    def initial(self, request, *args, **kwargs):
        # A method the view does not have is a 405, whoever asks (HasScope would otherwise
        # refuse it as a missing scope, 403, before DRF looked for the handler).
        method = request.method.lower()
        if method not in self.http_method_names or not hasattr(self, method):
            raise exceptions.MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)
        # After the key is checked (a 401 says more than a 413 to a caller without one),
        # before the body is read: request.data is parsed lazily, in the handler.
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads nothing of a body whose length it cannot parse
        if length > self.max_body_bytes:
            raise BodyTooLarge(
                f"The request body is too large: {self.max_body_bytes:,} bytes at most here."
            )


class NotFoundView(ApiView):
    """Every path under /api/v1/ that no endpoint has: a 404 in the error shape (Django's own
    404 page is HTML)."""

    authentication_classes: list = []
    permission_classes: list = []
    schema = None  # not an endpoint: left out of the OpenAPI schema
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def initial(self, request, *args, **kwargs):
        raise exceptions.NotFound("No endpoint has this path.", code="not_found")
