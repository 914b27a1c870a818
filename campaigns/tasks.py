"""Celery entry points: thin, ids in, services do the work."""

import logging
from datetime import timedelta

from celery import shared_task
from celery.signals import worker_process_init
from django.utils import timezone

from campaigns import (
    delivery,
    imports,
    leases,
    linkcheck,
    message_sweeper,
    ready,
    senders,
    services,
    sweeper,
)
from campaigns.api import idempotency

logger = logging.getLogger(__name__)

# A batch SES kept throttling retries after 5 s, doubling up to 10 minutes (20 retries span
# about 2.5 hours); one that ran out of time retries at once.
THROTTLE_RETRY_BASE_SECONDS = 5
THROTTLE_RETRY_MAX_SECONDS = 600
# Hard limits (the process is replaced): far above what each task needs, so only a hung task
# meets them. A batch stops claiming after delivery.BATCH_MAX_SECONDS and may then wait out
# its calls in flight and an outage of PostgreSQL or Redis (delivery.OUTAGE_WAIT_SECONDS).
BATCH_TIME_LIMIT = int(delivery.BATCH_MAX_SECONDS + 2 * delivery.OUTAGE_WAIT_SECONDS + 120)
START_TIME_LIMIT = 600  # compile, store the SES template, freeze the first chunk
FREEZE_TIME_LIMIT = 3600  # millions of members (chunk cost: docs/PERFORMANCE.md)
PERIODIC_TIME_LIMIT = 300


@shared_task(name="campaigns.tasks.campaign_start", time_limit=START_TIME_LIMIT)
def campaign_start(campaign_id: int) -> None:
    services.campaign_start(campaign_id=campaign_id)


@shared_task(name="campaigns.tasks.campaign_freeze", time_limit=FREEZE_TIME_LIMIT)
def campaign_freeze(campaign_id: int) -> None:
    services.campaign_freeze(campaign_id=campaign_id)


@shared_task(
    bind=True, name="campaigns.tasks.deliver_batch", max_retries=20, time_limit=BATCH_TIME_LIMIT
)
def deliver_batch(
    self, campaign_id: int, first_id: int, last_id: int, waiting_lease_id: int | None = None
) -> None:
    _deliver(self, (campaign_id, first_id, last_id), first_id, last_id, waiting_lease_id)
    services.campaign_finish_if_answered(campaign_id=campaign_id)


@shared_task(
    bind=True, name="campaigns.tasks.deliver_message", max_retries=20, time_limit=BATCH_TIME_LIMIT
)
def deliver_message(
    self, campaign_id: int, message_id: int, waiting_lease_id: int | None = None
) -> None:
    """One transactional message (campaigns.transactional): a batch of one row of its stream,
    on the transactional queue."""
    _deliver(self, (campaign_id, message_id), message_id, message_id, waiting_lease_id)


@shared_task(
    bind=True, name="campaigns.tasks.deliver_messages", max_retries=20, time_limit=BATCH_TIME_LIMIT
)
def deliver_messages(
    self, campaign_id: int, message_ids: list[int], waiting_lease_id: int | None = None
) -> None:
    """A stream's messages (these ids only) left to a retry by a drain (deliver_ready)."""
    ids = sorted(message_ids)
    _deliver(self, (campaign_id, ids), ids[0], ids[-1], waiting_lease_id, ids=ids)


@shared_task(name="campaigns.tasks.deliver_ready", time_limit=BATCH_TIME_LIMIT + 120)
def deliver_ready() -> None:
    """Drain the ready list (campaigns.ready): each stream's popped messages as one batch."""
    ready.messages_drain(
        deliver=_deliver_popped, defer=lambda stream_id, ids: deliver_messages.delay(stream_id, ids)
    )


def _deliver_popped(campaign_id: int, ids: list[int]) -> None:
    """One stream's popped messages; rows left to a retry go to a deliver_messages task, as a
    retry of deliver_message's would (a waiting lease keeps them from the sweeper)."""
    result = delivery.deliver_batch(
        campaign_id=campaign_id, first_id=ids[0], last_id=ids[-1], ids=ids
    )
    if result.retry:
        countdown = _retry_countdown(result.retry, retries=0)
        lease_id = _wait_lease(campaign_id, ids[0], ids[-1], countdown)
        deliver_messages.apply_async(
            (campaign_id, ids), {"waiting_lease_id": lease_id}, countdown=countdown
        )


def _deliver(
    task,
    args: tuple,
    first_id: int,
    last_id: int,
    waiting_lease_id: int | None,
    ids: list[int] | None = None,
) -> None:
    """Send the range (or its `ids`); on a retry verdict, leave a waiting lease and retry the
    task (with `args`) after the backoff."""
    campaign_id = args[0]
    if waiting_lease_id is not None:  # this run keeps the promise that lease made
        leases.lease_drop(lease_id=waiting_lease_id)
    result = delivery.deliver_batch(
        campaign_id=campaign_id, first_id=first_id, last_id=last_id, ids=ids
    )
    if result.retry:
        countdown = _retry_countdown(result.retry, retries=task.request.retries)
        lease_id = _wait_lease(campaign_id, first_id, last_id, countdown)
        raise task.retry(args=args, kwargs={"waiting_lease_id": lease_id}, countdown=countdown)


def _retry_countdown(retry: str, *, retries: int) -> int:
    if retry == delivery.RETRY_TIME_UP:
        return 0
    return min(THROTTLE_RETRY_BASE_SECONDS * 2**retries, THROTTLE_RETRY_MAX_SECONDS)


def _wait_lease(campaign_id: int, first_id: int, last_id: int, countdown: int) -> int:
    # Until the retry runs, its rows are `created` with no batch on them: a waiting lease
    # tells the sweeper they are not lost.
    return leases.lease_wait(
        campaign_id=campaign_id,
        first_id=first_id,
        last_id=last_id,
        until=timezone.now() + timedelta(seconds=countdown),
    )


@shared_task(name="campaigns.tasks.campaigns_start_due", time_limit=PERIODIC_TIME_LIMIT)
def campaigns_start_due() -> None:
    services.campaigns_start_due()
    services.campaign_waves_start_due()


@shared_task(name="campaigns.tasks.campaigns_sweep", time_limit=PERIODIC_TIME_LIMIT)
def campaigns_sweep() -> None:
    sweeper.campaigns_sweep()


@shared_task(name="campaigns.tasks.idempotency_records_expire", time_limit=PERIODIC_TIME_LIMIT)
def idempotency_records_expire() -> None:
    logger.info("idempotency records expired: %d", idempotency.idempotency_records_expire())


@shared_task(name="campaigns.tasks.messages_sweep", time_limit=PERIODIC_TIME_LIMIT)
def messages_sweep() -> None:
    message_sweeper.messages_sweep()


@worker_process_init.connect
def open_ses_client(**_) -> None:
    """A worker process opens its SES client as it starts, not in its first send (botocore
    loads its service models, a noticeable pause). If that fails, the first send raises."""
    try:
        senders.ses_client_open()
    except Exception as err:  # noqa: BLE001 (reported, and raised again by the first send)
        logger.warning("ses client not opened at start: %s", type(err).__name__)


IMPORT_TIME_LIMIT = 3600  # a file at CONTACT_IMPORT_MAX_MB is minutes of work at most


@shared_task(name="campaigns.tasks.contact_import_check", time_limit=IMPORT_TIME_LIMIT)
def contact_import_check(job_id: int) -> None:
    imports.import_job_check(job_id=job_id)


@shared_task(name="campaigns.tasks.contact_import_run", time_limit=IMPORT_TIME_LIMIT)
def contact_import_run(job_id: int) -> None:
    imports.import_job_run(job_id=job_id)


@shared_task(name="campaigns.tasks.links_check", time_limit=PERIODIC_TIME_LIMIT)
def links_check(campaign_id: int) -> None:
    linkcheck.links_check(campaign_id=campaign_id)
