"""`make demo`'s settings: the embedded defaults, plus trust in the local SES endpoint's SNS
signing certificate, so the events seslocal publishes (seslocal/events.py) reach the webhook.

Production never loads this module (DJANGO_SETTINGS_MODULE=config.settings). Here, and only
here, the SNS certificate host is the local endpoint's own host:port over http (taken from
AWS_ENDPOINT_URL_SESV2, the endpoint the demo sends to); scripts/demo.py pins seslocal's topic
(SNS_TOPIC_ARNS, read as everywhere). Every other check of the webhook (basic auth, topic, age,
signature) is unchanged. Refused unless DEBUG is on and the endpoint is on this machine.
"""

from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from config.env import env_str
from config.settings import *  # noqa: F403
from config.settings import DEBUG

_endpoint = urlsplit(env_str("AWS_ENDPOINT_URL_SESV2", "http://127.0.0.1:8025"))
if not DEBUG or _endpoint.hostname not in ("127.0.0.1", "localhost", "::1"):
    raise ImproperlyConfigured(
        "config.settings.demo is for `make demo` only: it needs DJANGO_DEBUG=1 and the local "
        "SES endpoint (AWS_ENDPOINT_URL_SESV2) on this machine."
    )
SNS_CERT_HOST = _endpoint.netloc
SNS_CERT_URL_SCHEMES = ("http",)
