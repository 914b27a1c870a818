"""The process's SES client: one per process, of the kind SES_CLIENT names.

Ask ses_client() each time rather than keeping the client: a forked child gets its own."""

from __future__ import annotations

import os
import threading

import boto3
from botocore.config import Config
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from campaigns.ses.calls import SesClient

_lock = threading.Lock()
_client: SesClient | None = None


def ses_client() -> SesClient:
    """The process's client, built on first use (under a lock: a worker's send threads all
    ask at once, and building one loads botocore's service models, which is slow)."""
    global _client
    client = _client
    if client is None:
        with _lock:
            if _client is None:
                _client = _client_build()
            client = _client
    return client


def ses_client_reset() -> None:
    """Forget the process's client (tests that change the settings or the endpoint)."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def _client_build() -> SesClient:
    from campaigns.ses.boto import BotoSesClient
    from campaigns.ses.http import HttpSesClient

    kind = settings.SES_CLIENT
    if kind not in ("http", "boto3"):
        raise ImproperlyConfigured(f"SES_CLIENT must be 'http' or 'boto3', not {kind!r}.")
    # boto3 resolves the endpoint (AWS_ENDPOINT_URL_SESV2 included), credentials and
    # timeouts for both kinds.
    session = boto3.session.Session(region_name=settings.AWS_SES_REGION)
    boto3_client = session.client("sesv2", config=Config(**settings.SES_CLIENT_CONFIG))
    if kind == "boto3":
        return BotoSesClient(boto3_client)
    return HttpSesClient(boto3_client=boto3_client, credentials=session.get_credentials())


def _forget_in_child() -> None:
    # A forked child must not share its parent's connections (two processes reading answers
    # off one socket would swap them) nor a lock another thread held at the fork.
    global _client, _lock
    _client, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
