"""Celery entry points for tracking: thin, the services do the work."""

from celery import shared_task

from tracking import callbacks
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


@shared_task(name="tracking.tasks.callbacks_dispatch", time_limit=120)
def callbacks_dispatch() -> None:
    """Beat: queue new events for the endpoints that want them; a delivery task for each
    endpoint with deliveries due (tracking.callbacks)."""
    callbacks.callbacks_dispatch()


@shared_task(
    name="tracking.tasks.callbacks_deliver",
    # Above the task's budget plus a claim's posts at their timeouts; a task past it is
    # replaced, and its rows are due again when their lease ends.
    time_limit=callbacks.DELIVER_BUDGET_SECONDS + 300,
)
def callbacks_deliver(endpoint_id: int) -> None:
    """Post one endpoint's due deliveries for a while."""
    callbacks.callbacks_deliver(endpoint_id=endpoint_id)
