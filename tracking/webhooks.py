"""The SES tracking webhook: anymail's view, with SNS signatures verified first.

Mounted at anymail's own URL (/webhooks/anymail/amazon_ses/tracking/, before anymail's URLs in
config/urls.py), so SNS subscriptions need no change. The order of checks:
  1. anymail: no Authorization header → 401 (SNS then retries with basic auth); wrong basic
     auth or SNS headers that disagree with the body → 400;
  2. here: the SNS signature (tracking.sns) → 403 if it does not verify, 503 if the signing
     certificate cannot be fetched right now (SNS retries 5xx, never 4xx);
  3. anymail: parse; a SubscriptionConfirmation is confirmed with SNS (only now, after 1 and
     2); each event goes out on anymail's `tracking` signal → tracking.receivers.
Nothing is written before step 3.
"""

import logging

from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponse, HttpResponseForbidden

from tracking.sns import SnsCertificateUnavailable, SnsVerificationError, sns_verify

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
