"""Celery entry points: thin, ids in, services do the work."""

import logging

from celery import shared_task
from celery.signals import worker_process_init

from campaigns import delivery, services

logger = logging.getLogger(__name__)

# Throttled batches retry after 5 s, doubling up to 10 minutes: SES's per-second rate limit
# clears within a second, so the first retries are short; 20 retries span about 2.5 hours
# before the rows are left `created` for the sweeper to enqueue again.
THROTTLE_RETRY_BASE_SECONDS = 5
THROTTLE_RETRY_MAX_SECONDS = 600


@shared_task(name="campaigns.tasks.campaign_start")
def campaign_start(campaign_id: int) -> None:
    services.campaign_start(campaign_id=campaign_id)


@shared_task(name="campaigns.tasks.campaign_freeze")
def campaign_freeze(campaign_id: int) -> None:
    services.campaign_freeze(campaign_id=campaign_id)


@shared_task(bind=True, name="campaigns.tasks.deliver_batch", max_retries=20)
def deliver_batch(self, campaign_id: int, first_id: int, last_id: int) -> None:
    result = delivery.deliver_batch(campaign_id=campaign_id, first_id=first_id, last_id=last_id)
    if result.retry:
        countdown = min(
            THROTTLE_RETRY_BASE_SECONDS * 2**self.request.retries, THROTTLE_RETRY_MAX_SECONDS
        )
        raise self.retry(countdown=countdown)
    services.campaign_finish_if_answered(campaign_id=campaign_id)


@shared_task(name="campaigns.tasks.campaigns_start_due")
def campaigns_start_due() -> None:
    services.campaigns_start_due()


@shared_task(name="campaigns.tasks.campaigns_sweep")
def campaigns_sweep() -> None:
    services.campaigns_sweep()


@worker_process_init.connect
def open_ses_connection(**_) -> None:
    """A worker process opens its SES connection as it starts, not in its first send (botocore
    loads its service models: up to ~0.7 s of CPU). If that fails, the first send raises."""
    try:
        delivery.ses_connection()
    except Exception as err:  # noqa: BLE001 (reported, and raised again by the first send)
        logger.warning("ses connection not opened at start: %s", type(err).__name__)
