"""The SES tracking webhook: anymail's view, with SNS signatures verified first.

Mounted at anymail's own URL (/webhooks/anymail/amazon_ses/tracking/, before anymail's URLs in
config/urls.py), so SNS subscriptions need no change. The order of checks:
  1. anymail: no Authorization header → 401 (SNS then retries with basic auth); wrong basic
     auth or SNS headers that disagree with the body → 400;
  2. here: the SNS signature (tracking.sns) → 403 if it does not verify, 503 if the signing
     certificate cannot be fetched right now (SNS retries 5xx, never 4xx);
  3. anymail: parse; a SubscriptionConfirmation is confirmed with SNS (only now, after 1 and
     2); each event goes out on anymail's `tracking` signal → tracking.receivers.
Nothing is written before step 3. With ESP_EVENTS_BUFFER on, step 3's events are pushed to
Redis instead (tracking.esp_events' buffer) and recorded in batches by `python -m
tracking.buffer`; if Redis does not take them they go out on the signal as before (recorded
now; a recording failure answers 500, so SNS delivers again).

`ses_webhook_wsgi` (config/wsgi.py) serves SNS Notifications POSTed to the URL without Django's
URL resolver and middleware (~0.5 ms of CPU a request); the same view, the same checks.
"""

import logging
from collections.abc import Callable, Iterable

from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from django.core.handlers.exception import convert_exception_to_response
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponse, HttpResponseForbidden

from tracking.esp_events import esp_events_buffer_enabled, esp_events_buffer_push
from tracking.services import tracking_flusher_ensure
from tracking.sns import SnsCertificateUnavailable, SnsVerificationError, sns_verify
from tracking.wsgi_direct import direct_request, direct_response

logger = logging.getLogger(__name__)


class SesTrackingWebhookView(AmazonSESTrackingWebhookView):
    # Django makes a view instance per request, and anymail's __init__ reads its settings and
    # builds boto3 parameters each time: ~150 µs of a ~1 ms event (measured). Its result only
    # depends on settings, so it is computed once and copied (reset when a setting changes).
    _initialized: dict | None = None

    def __init__(self, **kwargs):
        cls = type(self)
        if kwargs or cls._initialized is None:
            super().__init__(**kwargs)
            if not kwargs:
                cls._initialized = dict(self.__dict__)
        else:
            self.__dict__.update(cls._initialized)

    def run_validators(self, request) -> None:
        super().run_validators(request)  # basic auth, SNS headers (anymail)
        sns_verify(message=self._parse_sns_message(request))

    def parse_events(self, request) -> list:
        if esp_events_buffer_enabled():
            message = self._parse_sns_message(request)
            if message.get("Type") == "Notification" and esp_events_buffer_push(
                sns_message=message
            ):
                tracking_flusher_ensure()  # this process records it if the flusher is down
                return []  # queued: the flusher records it
        return super().parse_events(request)  # anymail's, one per recipient: recorded now

    def post(self, request, *args, **kwargs) -> HttpResponse:
        try:
            return super().post(request, *args, **kwargs)
        except SnsVerificationError as err:
            message = getattr(request, "_sns_message", None) or {}
            logger.warning(
                "sns message refused sns_id=%s type=%s reason=%s",
                str(message.get("MessageId", ""))[:100],
                str(message.get("Type", ""))[:40],
                str(err)[:200],
            )
            return HttpResponseForbidden("SNS signature not verified")
        except SnsCertificateUnavailable:
            # Logged where it failed; SNS retries a 5xx answer later.
            return HttpResponse("SNS signing certificate unavailable", status=503)


@receiver(setting_changed)
def _settings_changed(**kwargs) -> None:
    SesTrackingWebhookView._initialized = None


# --- WSGI: SNS notifications without the middleware --------------------------------------------

WEBHOOK_PATH = "/webhooks/anymail/amazon_ses/tracking/"  # as config/urls.py routes it


def ses_webhook_wsgi(application: Callable) -> Callable:
    """Wrap a WSGI application so SNS Notifications POSTed to WEBHOOK_PATH go straight to
    SesTrackingWebhookView, skipping URL resolution and the MIDDLEWARE chain (the view is
    csrf_exempt and uses no session, user or messages). Its exceptions are answered as
    Django's handler answers them (convert_exception_to_response: 400 for anymail's
    validation failures, 500 otherwise, logged). Anything else (another path or method,
    subscription confirmations, a Host not in ALLOWED_HOSTS, plain http under
    SECURE_SSL_REDIRECT) goes to `application` unchanged.

        application = ses_webhook_wsgi(tracking_wsgi(get_wsgi_application()))  # config/wsgi.py
    """

    def post(request):
        # The view's POST handler without as_view()'s dispatch: the route already checked the
        # method, and csrf_exempt / login_not_required only mark the view for middleware
        # these requests skip. Its method_decorator wrappers rebuilt three functools wrappers
        # a request (~8% of one, measured). A fresh instance each time, as Django makes.
        return SesTrackingWebhookView().post(request)

    view = convert_exception_to_response(post)

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
