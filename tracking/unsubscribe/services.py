"""Unsubscribes: the List-Unsubscribe headers (RFC 2369, RFC 8058 one-click), the footer link,
and the one service that records a recipient's unsubscribe.

The URL carries the unsubscribe token (campaigns.tokens), never the tracking one, which
travels where proxies log it. "list" sets Membership.unsubscribed_at (the row is kept, so a
re-import cannot subscribe them again); "all" sets Contact.status = unsubscribed, never
overwriting bounced / complained, which already stop all mail.

The API's messages have no list (Campaign.contact_list is empty for transactional streams and
bulk jobs): unsubscribing through one of them is from all mail, whatever the scope asked
(one-click asks for "list"). Transactional messages carry no List-Unsubscribe header at all
(campaigns.messages), as Postmark's and Notify's do not: a password reset is not a mailing;
a template that shows {{ unsubscribe_url }} still gets a working link, to all mail.
"""

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from campaigns.audiences import membership_unsubscribe_set
from campaigns.counters import CounterName, counters_add
from campaigns.models import Contact, Membership, Notification
from tracking.models import Event

logger = logging.getLogger(__name__)

SCOPE_LIST = "list"
SCOPE_ALL = "all"
SCOPES = (SCOPE_LIST, SCOPE_ALL)


# -- reading (the confirmation page) ----------------------------------------------------------


@dataclass(frozen=True)
class UnsubscribeState:
    """What the page shows before anything changes."""

    list_name: str  # "" for a message without a list (the API's): only "all mail" is offered
    masked_email: str  # "p•••@example.org": enough to recognise, not to harvest
    list_unsubscribed: bool  # already off this list
    no_mail: bool  # the contact gets no mail at all (unsubscribed, bounced or complained)


def notification_unsubscribe_state(*, notification_id: int) -> UnsubscribeState | None:
    """The unsubscribe state of a message's recipient; None for an unknown notification."""
    row = (
        Notification.objects.filter(pk=notification_id)
        .values(
            "contact_id",
            "contact__email",
            "contact__status",
            "campaign__contact_list_id",
            "campaign__contact_list__name",
        )
        .first()
    )
    if row is None:
        return None
    list_id = row["campaign__contact_list_id"]
    list_unsubscribed = (
        list_id is not None
        and Membership.objects.filter(
            contact_list_id=list_id, contact_id=row["contact_id"], unsubscribed_at__isnull=False
        ).exists()
    )
    return UnsubscribeState(
        list_name=row["campaign__contact_list__name"] or "",
        masked_email=_mask(row["contact__email"]),
        list_unsubscribed=list_unsubscribed,
        no_mail=row["contact__status"] != Contact.Status.ACTIVE,
    )


def _mask(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}"


# -- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnsubscribeOutcome:
    changed: bool  # False: the recipient was already unsubscribed (or suppressed) that way
    scope: str
    list_name: str


def contact_unsubscribe(
    *,
    notification_id: int,
    scope: str,
    source: str,
    via: str = "",
    user_agent: str = "",
    ip: str | None = None,
) -> UnsubscribeOutcome | None:
    """Unsubscribe the recipient of a message from its campaign's list ("list") or from all
    mail ("all"; a message without a list: always), None for an unknown notification.

    Effective at once (committed before returning; the freeze and the claim read the same
    columns) and idempotent: a repeat changes nothing and writes nothing. Each actual change
    writes one UNSUBSCRIBED event; the campaign's `unsubscribed` counter counts recipients,
    so it gains 1 on the first change through a message only (a "list" then an "all" through
    the same message is one unsubscribed recipient, two events).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
    if source not in Event.Source.values:
        raise ValueError(f"unknown event source {source!r}")
    now = timezone.now()
    with transaction.atomic():
        # Locking the notification row serializes unsubscribes through the same message (two
        # tabs, a provider's one-click racing the page), so the counter's "first change" test
        # below is exact. NO KEY: events of that message (opens, clicks) can still be inserted.
        row = (
            Notification.objects.select_for_update(no_key=True, of=("self",))
            .filter(pk=notification_id)
            .values(
                "campaign_id",
                "contact_id",
                "campaign__contact_list_id",
                "campaign__contact_list__name",
            )
            .first()
        )
        if row is None:
            return None
        contact_id, list_id = row["contact_id"], row["campaign__contact_list_id"]
        if list_id is None:
            scope = SCOPE_ALL  # no list to leave: the API's messages
        if scope == SCOPE_LIST:
            changed = membership_unsubscribe_set(list_id=list_id, contact_id=contact_id, now=now)
        else:
            changed = bool(
                Contact.objects.filter(pk=contact_id, status=Contact.Status.ACTIVE).update(
                    status=Contact.Status.UNSUBSCRIBED, updated_at=now
                )
            )
        if changed:
            unsubscribes = Event.objects.filter(
                notification_id=notification_id, type=Event.Type.UNSUBSCRIBED
            )
            first = not unsubscribes.exists()
            what = f"list {list_id}" if scope == SCOPE_LIST else "all mail"
            Event.objects.create(
                type=Event.Type.UNSUBSCRIBED,
                source=source,
                occurred_at=now,
                notification_id=notification_id,
                description=f"{what} ({via})" if via else what,
                user_agent=user_agent[:500],
                ip=ip,
            )
            if first:
                counters_add(campaign_id=row["campaign_id"], deltas={CounterName.UNSUBSCRIBED: 1})
    logger.info(
        "unsubscribe notification=%s campaign=%s contact=%s list=%s scope=%s via=%s changed=%s",
        notification_id, row["campaign_id"], contact_id, list_id, scope, via or "-", changed,
    )  # fmt: skip
    return UnsubscribeOutcome(
        changed=changed, scope=scope, list_name=row["campaign__contact_list__name"] or ""
    )
