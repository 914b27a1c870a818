"""The lean route of POST /api/v1/messages: the endpoint's own steps, without Django's URL
resolver and middleware chain or DRF's dispatch (content negotiation, authenticator and
permission loops, throttle classes, finalize), which were most of the web's CPU per message
(docs/PERFORMANCE.md, Integrations API). The steps are the view's, in its order, by the same
functions: the key (campaigns.api.authentication.api_key_from_header), the scope
(campaigns.api.permissions.HasScope), the rate limit (campaigns.api.throttling), the body
(the API's JsonParser through DRF's Request), the message (campaigns.api.views.message_post:
validation, idempotency, message_create, the ready list), the error shape
(campaigns.api.errors.api_exception_handler), DRF's JSON renderer and response headers, and
the security headers of the middleware that would have run.

It answers only the requests whose answer cannot depend on what it skips; every other one
goes to Django unchanged (`_lean`): no Authorization header (a staff session, or nobody), a
Cookie (a session could be in play), a query string (?format=), an Accept other than JSON, a
body that is not `application/json` (UTF-8), no or an oversize Content-Length, a
Transfer-Encoding, plus what infra.wsgi_direct refuses (a Host not allowed, plain http under
SECURE_SSL_REDIRECT). Nothing is read from the body before that decision, so Django reads it
whole.

    application = messages_wsgi(get_wsgi_application())   # config/wsgi.py
"""

import functools
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from django.dispatch import receiver
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.log import log_response
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.api.authentication import KEYWORD, ApiKeyUser, api_key_from_header
from campaigns.api.base import JsonParser
from campaigns.api.errors import api_exception_handler
from campaigns.api.permissions import HasScope
from campaigns.api.throttling import ApiRateThrottle
from campaigns.api.views import MessageListCreate, message_post
from campaigns.transactional import message_statement_answered_at
from infra.wsgi_direct import content_type_parsed, direct_request, direct_response

PATH = "/api/v1/messages"
_ACCEPTS = frozenset(("", "*/*", "application/json"))
_RENDERER = JSONRenderer()
_MEDIA_TYPE = "application/json"
# A connection that answered a message's statement less than this long ago is not checked
# again (CONN_HEALTH_CHECKS' SELECT 1 before the request's first statement): the check was a
# round trip and ~7% of the web's CPU per message under load (docs/PERFORMANCE.md). What it
# changes: a connection PostgreSQL dropped within that second answers one request 500 (nothing
# stored: the message's statement is its own transaction) before Django replaces it.
HEALTH_CHECK_IDLE_SECONDS = 1.0


def messages_wsgi(application: Callable) -> Callable:
    """Wrap Django's WSGI application so the requests `_lean` takes are answered here; every
    other request goes to `application` unchanged."""

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return application(environ, start_response)
        answered = messages_direct(environ)
        if answered is None:
            return application(environ, start_response)
        return direct_response(*answered, start_response)

    wsgi.messages_wsgi = True  # so a check can tell
    return wsgi


def messages_direct(environ: dict) -> tuple[WSGIRequest, HttpResponse] | None:
    """The request and its answer, or None for Django to answer (nothing read of it)."""
    if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
        return None
    if not _lean(environ):
        return None
    request = direct_request(environ)
    if request is None:
        return None
    _health_check_only_if_idle(connections[DEFAULT_DB_ALIAS])
    return request, _answer(request)


def _health_check_only_if_idle(database) -> None:
    """Skip this request's health check if the connection answered a message's statement
    within HEALTH_CHECK_IDLE_SECONDS (and nothing has gone wrong on it since: Django closes
    a connection whose error left it unusable at the end of the request). A POST answered by
    another thread's statement (group commit) does not count: its own connection may have
    been idle since."""
    answered_at = message_statement_answered_at(database)
    if (
        answered_at is not None
        and database.connection is not None
        and not database.errors_occurred
        and time.monotonic() - answered_at < HEALTH_CHECK_IDLE_SECONDS
    ):
        database.health_check_done = True


def _lean(meta: dict) -> bool:
    """Whether the view's answer to this request cannot depend on what the lean route skips
    (the module's doc); decided from the headers alone."""
    if (
        not meta.get("HTTP_AUTHORIZATION")
        or meta.get("HTTP_COOKIE")
        or meta.get("QUERY_STRING")
        or meta.get("HTTP_TRANSFER_ENCODING")
        or meta.get("HTTP_ACCEPT", "") not in _ACCEPTS
    ):
        return False
    media_type, params = content_type_parsed(meta.get("CONTENT_TYPE", ""))
    if media_type != _MEDIA_TYPE or any(
        name != "charset" or value.lower() not in ("utf-8", "utf8")
        for name, value in params.items()
    ):
        return False
    length = meta.get("CONTENT_LENGTH") or ""
    if not (length.isascii() and length.isdigit()):
        return False
    return int(length) <= min(MessageListCreate.max_body_bytes, settings.MAX_REQUEST_BYTES)


def _answer(request: WSGIRequest) -> HttpResponse:
    """What MessageListCreate answers a POST with a key, step by step as APIView.dispatch and
    ApiView.initial take them (the body size is _lean's)."""
    api_request = Request(request, parsers=[JsonParser()])
    try:
        try:
            key = api_key_from_header(request)
        except exceptions.AuthenticationFailed as failed:
            failed.auth_header = KEYWORD  # APIView.handle_exception: WWW-Authenticate
            raise
        api_request.user, api_request.auth = ApiKeyUser(key), key
        view = _view()
        # (Neither says False, they raise their own refusals: as DRF's check_* would, anyway.)
        if not HasScope().has_permission(api_request, view):
            raise exceptions.PermissionDenied()
        if not ApiRateThrottle().allow_request(api_request, view):
            raise exceptions.Throttled()
        response = message_post(api_request)
    except Exception as exc:  # noqa: BLE001 (APIView.handle_exception's split, below)
        response = api_exception_handler(exc, {"request": api_request, "view": _view()})
        if response is None:  # not an API error: Django's handler logs it and answers 500
            return _middleware_headers(request, response_for_exception(request, exc))
    response = _middleware_headers(request, _rendered(response))
    if response.status_code >= 400:  # as BaseHandler.get_response: its path, nothing more
        log_response("%s: %s", response.reason_phrase, request.path, response=response,
                     request=request)  # fmt: skip
    return response


@functools.cache
def _view() -> MessageListCreate:
    """The view, as DRF's dispatch sets it up (its scopes, methods and response headers)."""
    view = MessageListCreate()
    view.setup(None)  # as View.as_view's: a HEAD for its GET
    return view


def _rendered(response: Response) -> Response:
    """As APIView.finalize_response and Response.render: DRF's JSON renderer (the one a
    request without Accept, or accepting JSON, gets) and the view's Allow and Vary."""
    response.accepted_renderer = _RENDERER
    response.accepted_media_type = _MEDIA_TYPE
    response.renderer_context = {}
    for name, value in _view().default_response_headers.items():
        response[name] = value
    return response.render()


def _middleware_headers(request: WSGIRequest, response: HttpResponse) -> HttpResponse:
    """What the response-side middleware that would have run adds (the security headers,
    X-Frame-Options); the others (sessions, CSRF, messages) add nothing to these requests."""
    security, frames = _middleware()
    return frames.process_response(request, security.process_response(request, response))


@functools.cache
def _middleware() -> tuple[SecurityMiddleware, XFrameOptionsMiddleware]:
    return SecurityMiddleware(_unused), XFrameOptionsMiddleware(_unused)


def _unused(request):  # pragma: no cover (never called: only their process_response is used)
    raise AssertionError


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    if setting.startswith("SECURE_") or setting == "X_FRAME_OPTIONS":
        _middleware.cache_clear()
