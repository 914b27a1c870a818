"""What the WSGI fast routes (tracking.hits.views.tracking_wsgi,
tracking.ses_events.webhook.ses_webhook_wsgi) share: which requests they may answer without
Django's URL resolver and middleware, and how they hand the response back to the server."""

import codecs
import functools
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.cache import close_caches
from django.core.cache.backends.base import BaseCache
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.db import close_old_connections
from django.dispatch import receiver
from django.http import HttpResponse
from django.http.request import split_domain_port, validate_host
from django.utils.http import parse_header_parameters
from django.utils.module_loading import import_string


@functools.lru_cache(maxsize=32)
def content_type_parsed(value: str) -> tuple[str, dict]:
    """A Content-Type header as (media type, parameters), parsed once per distinct value:
    read the parameters, never change them (the answer is shared)."""
    return parse_header_parameters(value)


class DirectRequest(WSGIRequest):
    """Django's request, with its Content-Type parsed once per distinct header value: Django
    parses it with the email package on every request, a noticeable share of a webhook
    request's CPU (docs/PERFORMANCE.md), and SNS sends the same one every time."""

    def _set_content_type_params(self, meta):
        content_type, params = content_type_parsed(meta.get("CONTENT_TYPE", ""))
        self.content_type, self.content_params = content_type, dict(params)
        if "charset" in params:
            try:
                codecs.lookup(params["charset"])
            except LookupError:
                pass
            else:
                self.encoding = params["charset"]


@functools.lru_cache(maxsize=64)
def _host_allowed(host: str, allowed_hosts: tuple[str, ...], debug: bool) -> bool:
    """HttpRequest.get_host()'s check, remembered per Host header (a server sees the same few
    all day; cost: docs/PERFORMANCE.md). Whatever the cache holds, a Host it does not allow goes
    to Django, which answers 400 and logs it."""
    if debug and not allowed_hosts:
        allowed_hosts = (".localhost", "127.0.0.1", "[::1]")  # as get_host() does
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed_hosts)


def direct_request(environ: dict) -> WSGIRequest | None:
    """The request, if a fast route may answer it itself; None where the full stack must: a
    Host not in ALLOWED_HOSTS (CommonMiddleware answers 400 and logs it), plain http under
    SECURE_SSL_REDIRECT (SecurityMiddleware redirects)."""
    request = DirectRequest(environ)
    allowed = _host_allowed(request._get_raw_host(), tuple(settings.ALLOWED_HOSTS), settings.DEBUG)
    if not allowed:
        return None
    if settings.SECURE_SSL_REDIRECT and not request.is_secure():
        return None
    return request


def direct_response(
    request: WSGIRequest, response: HttpResponse, start_response: Callable
) -> Iterable[bytes]:
    """Start the response as Django's WSGI handler would and end the request: it is closed,
    and the database connection kept, or closed if it broke or passed CONN_MAX_AGE, as after
    any Django request. request_started is not sent (its receivers reset the query log and the
    connections' state, which these views never use), and request_finished's receivers are
    called without the signal's dispatch (costs: docs/PERFORMANCE.md).

    The body is a list, ended before it is returned: granian sends a list in one call, where
    it iterates any other body from Rust and then calls its close() (the send and the end of
    a message POST: 8.7% of its web time that way, 7.3% as a list, docs/PERFORMANCE.md); the
    response is whole in memory by then anyway."""
    if response.streaming:  # not one of ours: closed as Django's handler would
        response._resource_closers.append(request.close)
        start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
        return response
    # CommonMiddleware's Content-Length, so the server need not close the connection.
    response.headers.setdefault("Content-Length", str(len(response.content)))
    start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
    _request_finished(request)
    return [response.content]


def _request_finished(request: WSGIRequest) -> None:
    """What HttpResponse.close() would do, minus the request_finished signal's dispatch: that
    signal's two receivers (Django's), called here."""
    request.close()
    close_old_connections()
    if _caches_close():
        close_caches()


@functools.cache
def _caches_close() -> bool:
    """Whether a configured cache backend does anything on close() (Django's memcached ones
    do; LocMem's and Redis's close is BaseCache's no-op). Finding the caches to close
    (caches.all()) on every request is a visible share of a pixel's CPU (docs/PERFORMANCE.md)."""
    return any(
        import_string(config["BACKEND"]).close is not BaseCache.close
        for config in settings.CACHES.values()
    )


@receiver(setting_changed)
def _caches_changed(*, setting: str, **kwargs) -> None:
    if setting == "CACHES":
        _caches_close.cache_clear()
