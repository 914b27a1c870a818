"""Celery entry points for tracking: thin, the services do the work."""

from celery import shared_task

from tracking.ses_events import pending as event_pending
from tracking.ses_events import retry as event_retry
from tracking.ses_events import simulated as event_simulated


@shared_task(name="tracking.tasks.esp_events_retry_pending")
def esp_events_retry_pending() -> None:
    """Beat: retry the SES events that named a message id we did not know yet."""
    event_retry.esp_events_retry_pending()


@shared_task(name="tracking.tasks.esp_events_expire_pending")
def esp_events_expire_pending() -> int:
    """Beat, hourly: delete the pending SES events past ESP_EVENT_PENDING_EXPIRY_HOURS."""
    return event_pending.esp_events_expire_pending()


@shared_task(name="tracking.tasks.simulated_events_record")
def simulated_events_record(notification_ids: list[int]) -> None:
    """A test key's messages just recorded `sent`: record the SES events SES would have sent
    (campaigns.simulator)."""
    event_simulated.simulated_events_record(notification_ids=notification_ids)
