"""The circuit breaker: a sending campaign whose hard-bounce or complaint rate passes its limit
is paused with the reason, for the marketer to clean the list before resuming."""

import logging

from django.conf import settings

from campaigns.counters import CounterName
from campaigns.models import Campaign, CampaignCounter, Notification
from campaigns.services import campaign_transition

logger = logging.getLogger(__name__)

N = Notification.Status
ACCEPTED = (N.SENT, N.DELIVERED, N.BOUNCED, N.COMPLAINED, N.REJECTED)


def campaign_circuit_check_after_commit(campaign_id: int) -> None:
    # The event is committed by now: a failing check must not turn its answer into a 500 (SNS
    # would redeliver an event already recorded); the next bounce or complaint checks again.
    try:
        campaign_circuit_check(campaign_id=campaign_id)
    except Exception:
        logger.exception("circuit breaker check failed campaign=%s", campaign_id)


def campaign_circuit_check(*, campaign_id: int) -> bool:
    """Pause the campaign if it is sending and, with at least CIRCUIT_BREAKER_MIN_SENT sent,
    its hard-bounce or complaint rate is above the limit; True if this call paused it."""
    if not Campaign.objects.filter(pk=campaign_id, status=Campaign.Status.SENDING).exists():
        return False
    counts = dict(
        CampaignCounter.objects.filter(
            campaign_id=campaign_id,
            name__in=[CounterName.SENT, CounterName.BOUNCED_HARD, CounterName.COMPLAINED],
        ).values_list("name", "value")
    )
    sent = counts.get(CounterName.SENT) or 0
    if sent <= 0:  # counters not kept for this campaign (yet): count the ledger
        sent = Notification.objects.filter(campaign_id=campaign_id, status__in=ACCEPTED).count()
    if sent < settings.CIRCUIT_BREAKER_MIN_SENT:
        return False
    bounced = counts.get(CounterName.BOUNCED_HARD, 0)
    complained = counts.get(CounterName.COMPLAINED, 0)
    reason = ""
    if bounced / sent > settings.CIRCUIT_BREAKER_BOUNCE_RATE:
        reason = (
            f"Paused automatically: {bounced} of {sent} sent messages bounced "
            f"({bounced / sent:.1%}), above the {settings.CIRCUIT_BREAKER_BOUNCE_RATE:.1%} limit. "
            "Clean the list before resuming."
        )
    elif complained / sent > settings.CIRCUIT_BREAKER_COMPLAINT_RATE:
        reason = (
            f"Paused automatically: {complained} of {sent} recipients marked it as spam "
            f"({complained / sent:.2%}), above the "
            f"{settings.CIRCUIT_BREAKER_COMPLAINT_RATE:.2%} limit. Check the list's consent "
            "and the content before resuming."
        )
    if not reason:
        return False
    paused = campaign_transition(
        campaign_id=campaign_id,
        from_statuses={Campaign.Status.SENDING},
        to=Campaign.Status.PAUSED,
        reason=reason,
    )
    if paused:
        logger.warning(
            "campaign %s paused by circuit breaker sent=%s bounced_hard=%s complained=%s",
            campaign_id,
            sent,
            bounced,
            complained,
        )
    return paused
