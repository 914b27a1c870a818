"""anymail's `tracking` signal (the library's edge) → our service. The webhook that sends it
has verified the SNS signature first (tracking.webhooks)."""

from anymail.signals import tracking
from django.dispatch import receiver

from tracking.esp_events import esp_event_record


@receiver(tracking, dispatch_uid="tracking.esp_event_record")
def record_esp_event(sender, event, esp_name, **kwargs) -> None:
    if esp_name == "Amazon SES":
        esp_event_record(event=event)
