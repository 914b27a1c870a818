"""Refuse request bodies over MAX_REQUEST_BYTES before anything reads them.

granian has no such limit, and Django's own caps cover what it holds in memory (form fields,
raw bodies: DATA_UPLOAD_MAX_MEMORY_SIZE), not uploaded files, which it streams to temporary
files of any size. Django reads no more than Content-Length, so checking it is enough. The
API's views have tighter limits of their own (campaigns.api.base); under /api/ this refusal
too is in the API's error shape.
"""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from campaigns.problems import problem


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads nothing of a body whose length it cannot parse
        if length > settings.MAX_REQUEST_BYTES:
            if request.path.startswith("/api/"):
                return JsonResponse(
                    {"errors": [problem("request_too_large", "The request body is too large.")]},
                    status=413,
                )
            return HttpResponse(
                "Request body too large.", status=413, content_type="text/plain; charset=utf-8"
            )
        return self.get_response(request)
