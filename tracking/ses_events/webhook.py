"""The SES event webhook: SNS messages POSTed by our topics, trusted step by step.

Basic auth, then the body, then the SNS checks (tracking.ses_events.sns), each refusing before
the next reads more of the request; nothing is written, and nothing of the request but the
SNS MessageId and TopicArn is logged, before every check has passed. The checks and their
answers: docs/EVENTS.md. `ses_webhook_wsgi` answers Notifications without Django's middleware.
"""

import base64
import binascii
import functools
import hmac
import logging
from collections.abc import Callable, Iterable

import orjson
from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.exception import convert_exception_to_response
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from infra.wsgi_direct import direct_request, direct_response
from tracking.models import Event
from tracking.ses_events.buffer import (
    esp_events_buffer_enabled,
    esp_events_buffer_push,
    esp_events_flusher_ensure,
)
from tracking.ses_events.parse import ses_event_type
from tracking.ses_events.record import ses_payload_record
from tracking.ses_events.sns import (
    MESSAGE_ID,
    TOPIC_ARN,
    SnsCertificateUnavailable,
    SnsMalformed,
    SnsVerificationError,
    sns_message_parse,
    sns_topics,
    sns_verify,
)

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/anymail/amazon_ses/tracking/"  # as config/urls.py routes it
# An SNS message carries at most 256 KiB of Message, which the JSON envelope escapes (a quote
# or backslash takes 2 bytes): 1 MiB leaves room; anything larger is not from SNS.
MAX_BODY_BYTES = 1024 * 1024
# What SES publishes once to a topic it was given as an event destination.
TOPIC_VALIDATED = "Successfully validated SNS topic for Amazon SES event publishing."


@functools.cache
def webhook_credentials() -> tuple[bytes, ...]:
    """The accepted basic-auth credentials (ANYMAIL's WEBHOOK_SECRET: "user:password", or a
    list of them while rotating). ImproperlyConfigured if there is none while DEBUG is off."""
    secret = settings.ANYMAIL.get("WEBHOOK_SECRET")
    secrets = [secret] if isinstance(secret, str) else list(secret or ())
    credentials = tuple(s.encode() for s in secrets if s)
    if not credentials:
        if not settings.DEBUG:
            raise ImproperlyConfigured(
                "Set ANYMAIL_WEBHOOK_SECRET (user:password, the credentials in the SNS "
                "subscription's URL): the SES webhook accepts no request without them."
            )
        logger.warning("ANYMAIL_WEBHOOK_SECRET is empty: the SES webhook refuses every request")
    return credentials


@receiver(setting_changed)
def _credentials_changed(*, setting: str, **kwargs) -> None:
    if setting in ("ANYMAIL", "DEBUG"):
        webhook_credentials.cache_clear()


def _credentials_valid(header: str) -> bool:
    """Whether an Authorization header carries accepted basic-auth credentials (compared in
    constant time)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (ValueError, binascii.Error):  # not base64, or not ASCII
        return False
    valid = False
    for accepted in webhook_credentials():
        valid |= hmac.compare_digest(given, accepted)
    return valid


def _loggable(message: dict | None) -> tuple[str, str]:
    """(SNS MessageId, TopicArn) of `message` for a log line: each only if it has SNS's shape
    (letters, digits, hyphens, colons, no space or line break), else "-"."""
    if not isinstance(message, dict):
        return "-", "-"
    sns_id, topic = message.get("MessageId"), message.get("TopicArn")
    sns_id_ok = isinstance(sns_id, str) and MESSAGE_ID.fullmatch(sns_id)
    topic_ok = isinstance(topic, str) and TOPIC_ARN.fullmatch(topic)
    return (sns_id if sns_id_ok else "-"), (topic if topic_ok else "-")


def _refused(status: int, reason: str, message: dict | None = None) -> HttpResponse:
    sns_id, topic = _loggable(message)
    logger.warning(
        "ses webhook refused status=%s reason=%s sns_id=%s topic=%s", status, reason, sns_id, topic
    )
    return HttpResponse(reason, status=status, content_type="text/plain")


def ses_webhook_post(request: HttpRequest) -> HttpResponse:
    """Answer an SNS message POSTed to the webhook (see the module's docstring)."""
    header = request.META.get("HTTP_AUTHORIZATION")
    if not header:
        # SNS sends the subscription URL's credentials after this challenge: routine, not
        # worth a warning.
        response = HttpResponse("credentials required", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Basic realm="Mailwright SES webhook"'
        return response
    if not _credentials_valid(header):
        return _refused(403, "wrong credentials")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0:
        return _refused(400, "bad Content-Length")
    if length > MAX_BODY_BYTES:
        return _refused(413, "body too large")
    message = None
    try:
        message = sns_message_parse(
            body=request.body,
            message_type=request.META.get("HTTP_X_AMZ_SNS_MESSAGE_TYPE"),
            message_id=request.META.get("HTTP_X_AMZ_SNS_MESSAGE_ID"),
        )
        topic = sns_verify(message=message)
    except SnsMalformed as err:
        return _refused(400, str(err), message)
    except SnsVerificationError as err:
        return _refused(403, str(err), message)
    except SnsCertificateUnavailable:
        # Logged where it failed; SNS retries a 5xx answer later.
        return HttpResponse("SNS signing certificate unavailable", status=503)
    if message["Type"] == "Notification":
        return _notification(message)
    if message["Type"] == "SubscriptionConfirmation":
        return _subscription_confirm(message, topic.arn)
    logger.info("sns unsubscribe confirmation ignored topic=%s", topic.arn)
    return HttpResponse()


def _notification(message: dict) -> HttpResponse:
    text = message["Message"]  # a string: the signature covered it
    if text == TOPIC_VALIDATED:
        return HttpResponse()
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _refused(400, "Message is not an SES event", message)
    if not isinstance(payload, dict):
        return _refused(400, "Message is not an SES event", message)
    if ses_event_type(payload) == "Received":
        return _refused(400, "an SES inbound notification: not for the tracking webhook", message)
    sns_id = message["MessageId"]  # letters, digits and hyphens (sns_message_parse)
    if esp_events_buffer_enabled() and esp_events_buffer_push(sns_id=sns_id, message=text):
        esp_events_flusher_ensure()  # this process records it if the flusher is down
        return HttpResponse()
    ses_payload_record(payload=payload, source=Event.Source.SES, sns_id=sns_id)
    return HttpResponse()


def _subscription_confirm(message: dict, topic_arn: str) -> HttpResponse:
    """Confirm a verified subscription of a pinned topic, by calling SNS's ConfirmSubscription
    in the topic's region (anymail's, with the AWS credentials of the installation)."""
    view = AmazonSESTrackingWebhookView()
    if not view.auto_confirm_enabled:
        logger.info("sns subscription not confirmed (auto-confirm off) topic=%s", topic_arn)
        return HttpResponse()
    try:
        view.auto_confirm_sns_subscription(message)
    except Exception as err:  # noqa: BLE001 (an AWS error's text may carry the token)
        logger.warning(
            "sns subscription not confirmed topic=%s error=%s", topic_arn, type(err).__name__
        )
        return HttpResponse("subscription not confirmed", status=503)
    logger.info("sns subscription confirmed topic=%s", topic_arn)
    return HttpResponse()


@csrf_exempt  # SNS posts without a session; basic auth and the signature authenticate it
@login_not_required
def ses_webhook(request: HttpRequest) -> HttpResponse:
    """The webhook's Django view (config/urls.py): POST only."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return ses_webhook_post(request)


# --- WSGI: SNS notifications without the middleware --------------------------------------------


def ses_webhook_wsgi(application: Callable) -> Callable:
    """Wrap a WSGI application so SNS Notifications POSTed to WEBHOOK_PATH go straight to
    ses_webhook_post, skipping URL resolution and the MIDDLEWARE chain (the view is
    csrf_exempt and uses no session, user or messages). Its exceptions are answered as
    Django's handler answers them (convert_exception_to_response: 500, logged). Anything else
    (another path or method, subscription confirmations, a Host not in ALLOWED_HOSTS, plain
    http under SECURE_SSL_REDIRECT) goes to `application` unchanged.

    Raises ImproperlyConfigured at start-up if SNS_TOPIC_ARNS or ANYMAIL_WEBHOOK_SECRET is
    missing (DEBUG off): the web server must not run a webhook that trusts nothing.

        application = ses_webhook_wsgi(tracking_wsgi(get_wsgi_application()))  # config/wsgi.py
    """
    sns_topics()
    webhook_credentials()
    view = convert_exception_to_response(ses_webhook_post)

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if (
            environ.get("PATH_INFO") != WEBHOOK_PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("HTTP_X_AMZ_SNS_MESSAGE_TYPE") != "Notification"
        ):
            return application(environ, start_response)
        request = direct_request(environ)
        if request is None:
            return application(environ, start_response)
        return direct_response(request, view(request), start_response)

    wsgi.ses_webhook_wsgi = True
    return wsgi
