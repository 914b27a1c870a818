"""The one shape of every 4xx: {"errors": [{"code", "field", "message"}]} (docs/API.md).

`field` names the request field at fault ("" for the request as a whole); a job's row error
adds `row`. Codes are stable strings clients can branch on; messages are for people.
"""

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from campaigns.problems import problem


class ApiError(exceptions.APIException):
    """One error of ours, raised from anywhere under a view (inside a transaction, raising is
    what rolls it back) and answered in the one shape."""

    def __init__(self, status_code: int, code: str, message: str, field: str = "") -> None:
        super().__init__(detail=message, code=code)
        self.status_code, self.field = status_code, field


def error_response(status_code: int, errors: list[dict], headers=None) -> Response:
    return Response({"errors": errors}, status=status_code, headers=headers)


def api_exception_handler(exc, context):
    """DRF's handler, with every error it answers reshaped to the one shape."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = exception_handler(exc, context)
    if response is None:
        return None  # a 500: Django's handler logs it (type only) and answers
    if isinstance(exc, exceptions.ValidationError):
        errors = list(_flatten(exc.detail))
    elif isinstance(exc, ApiError):
        errors = [problem(exc.detail.code, str(exc.detail), exc.field)]
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = getattr(detail, "code", None) or _DEFAULT_CODES.get(response.status_code, "error")
        errors = [problem(str(code), str(detail))]
    response.data = {"errors": errors}
    return response


_DEFAULT_CODES = {
    status.HTTP_401_UNAUTHORIZED: "not_authenticated",
    status.HTTP_403_FORBIDDEN: "permission_denied",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "rate_limited",
}


def _flatten(detail, field: str = ""):
    """DRF's nested {field: [ErrorDetail]} as flat errors, fields joined with dots."""
    if isinstance(detail, dict):
        for name, value in detail.items():
            name = "" if name == "non_field_errors" else str(name)
            yield from _flatten(value, f"{field}.{name}" if field and name else field or name)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                yield from _flatten(value, f"{field}.{index}" if field else str(index))
            else:
                yield from _flatten(value, field)
    else:
        yield problem(getattr(detail, "code", "invalid") or "invalid", str(detail), field)


def server_error(request: HttpRequest) -> HttpResponse:
    """The site's 500 (config.urls handler500): under /api/ in the one shape, code
    `server_error`, so a client reads every answer of the API as JSON; elsewhere Django's own
    page. Django has logged the exception already (django.request: the path and the
    exception's type and frames, never its text: config.logging), before calling this."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {
                "errors": [
                    problem(
                        "server_error",
                        "The server failed while answering. Retry the request (a POST with the "
                        "same Idempotency-Key: one that was stored is answered, not repeated).",
                    )
                ]
            },
            status=500,
        )
    return defaults.server_error(request)
