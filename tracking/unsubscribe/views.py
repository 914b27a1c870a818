"""The unsubscribe endpoint, /t/u/<token>: RFC 8058 one-click for mail providers, and a page
that link scanners can fetch safely.

A GET never changes anything (scanners fetch every link); the one-click POST acts at once
with no CSRF token (providers have none), the page's form POST is CSRF-checked here; only an
unsubscribe token is accepted (docs/DATAFLOW.md, Unsubscribes). Error responses are not logged
by Django: its "Not Found: /t/u/…" line would carry the token.
"""

import logging

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from campaigns.tokens import ONE_CLICK, notification_id_from_unsubscribe_token
from tracking.models import Event
from tracking.unsubscribe.services import (
    SCOPE_ALL,
    SCOPE_LIST,
    SCOPES,
    contact_unsubscribe,
    notification_unsubscribe_state,
)

logger = logging.getLogger(__name__)

_FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class _FormCsrfCheck(CsrfViewMiddleware):
    """Django's own CSRF check, run by hand for the page's form. A rejection returns its reason
    (a string) instead of Django's 403 page, whose log line carries the path, token and all."""

    def _reject(self, request, reason):
        return reason


def _csrf_rejection(request: HttpRequest) -> str | None:
    """None if the form POST passes Django's CSRF check, else the reason it failed."""
    return _FormCsrfCheck(lambda request: None).process_view(request, None, (), {})


def _client(request: HttpRequest) -> tuple[str, str | None]:
    # As tracking.hits.views: REMOTE_ADDR is the direct peer (a proxy must set it).
    return request.META.get("HTTP_USER_AGENT", ""), request.META.get("REMOTE_ADDR") or None


def _unlogged(response: HttpResponse) -> HttpResponse:
    # django.request logs every 4xx as "<reason>: <path>", and the path holds the token.
    # log_response() skips a response marked as logged (Django's own flag).
    response._has_been_logged = True
    return response


def _is_one_click(request: HttpRequest) -> bool:
    """RFC 8058 §3.2: the POST body is exactly `List-Unsubscribe=One-Click`, sent as
    multipart/form-data or application/x-www-form-urlencoded (some senders' tools send it with
    another content type, or none: the raw body then decides)."""
    if request.content_type in _FORM_CONTENT_TYPES:
        key, _, value = ONE_CLICK.partition("=")
        try:
            return request.POST.get(key, "").strip().lower() == value.lower()
        except MultiPartParserError:  # a broken body; Django's own 400 would log the path
            return False
    return request.body.strip() == ONE_CLICK.encode()


def _not_found(request: HttpRequest) -> HttpResponse:
    response = render(request, "tracking/unsubscribe_invalid.html", status=404)
    return _unlogged(response)


def _page(request: HttpRequest, state, *, error: str = "", scope: str = SCOPE_LIST, status=200):
    if not state.list_name:  # a message without a list (the API's): all mail is the choice
        scope = SCOPE_ALL
    response = render(
        request,
        "tracking/unsubscribe.html",
        {"state": state, "error": error, "scope": scope if scope in SCOPES else SCOPE_LIST,
         "SCOPE_LIST": SCOPE_LIST, "SCOPE_ALL": SCOPE_ALL},
        status=status,
    )  # fmt: skip
    return _unlogged(response) if status >= 400 else response


@csrf_exempt  # RFC 8058: mail providers POST without a CSRF token; the form is checked below
@never_cache
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD", "POST"):
        # Not require_http_methods: it logs the path (the token) with its 405.
        return _unlogged(HttpResponseNotAllowed(["GET", "HEAD", "POST"]))
    notification_id = notification_id_from_unsubscribe_token(token)
    state = (
        notification_unsubscribe_state(notification_id=notification_id)
        if notification_id is not None
        else None
    )
    if state is None:
        logger.info("unsubscribe invalid token method=%s", request.method)
        return _not_found(request)
    user_agent, ip = _client(request)

    if request.method != "POST":  # GET and HEAD only show the page
        return _page(request, state)

    if _is_one_click(request):
        contact_unsubscribe(
            notification_id=notification_id,
            scope=SCOPE_LIST,
            source=Event.Source.RECIPIENT,
            via="one-click",
            user_agent=user_agent,
            ip=ip,
        )
        # Read by a mail provider, not a person: 200 with a short body, nothing else.
        return HttpResponse("Unsubscribed.\n", content_type="text/plain; charset=utf-8")

    scope = request.POST.get("scope", "")
    rejection = _csrf_rejection(request)
    if rejection is not None:
        # Typically a browser that dropped the CSRF cookie; the page comes back with a fresh
        # form. The reason is not logged: Django's Referer reasons quote the URL (the token).
        logger.warning("unsubscribe form refused (csrf) notification=%s", notification_id)
        return _page(
            request,
            state,
            scope=scope,
            error=(
                "Your browser did not send back this page's security check (it may block "
                "cookies). Please press the button again."
            ),
            status=403,
        )
    if scope not in SCOPES:
        return _page(request, state, error="Please choose one of the two options.", status=400)
    outcome = contact_unsubscribe(
        notification_id=notification_id,
        scope=scope,
        source=Event.Source.RECIPIENT,
        via="page",
        user_agent=user_agent,
        ip=ip,
    )
    if outcome is None:  # the notification was deleted between the two reads
        return _not_found(request)
    return render(
        request,
        "tracking/unsubscribed.html",
        {"outcome": outcome, "state": state, "all": outcome.scope == SCOPE_ALL},
    )
