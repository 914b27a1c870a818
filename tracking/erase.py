"""Erasing a contact (a data subject's request, or a marketer's delete): the one service the
API's DELETE /api/v1/contacts/{id} and the admin's delete both call. Here, in tracking,
because it must reach the contact's events as well as campaigns' rows.

What goes, and what stays (docs/API.md#erasing-a-contact):
- A contact that was never mailed is deleted (with its memberships and status changes).
- A contact that was mailed cannot be: the ledger (Notification, PROTECT) and the reports'
  counts are built on its rows. Its row stays, emptied: the address is replaced by
  `erased-<id>@erased.invalid` (an address that can never be sent to), names, custom fields and
  time zone blanked, `erased_at` set; its memberships and status changes are deleted; its
  messages' personalisation and reference are blanked; its events lose their IP address, user
  agent, raw SES payload and any text that may quote the address (an SMTP answer). The
  ledger rows (ids, statuses, times) and the events' types, times and verdicts stay, so
  every report counts what it counted.
- Either way, an unsubscribed or suppressed address leaves its digest and status behind
  (campaigns.erased): the address stays so if it is imported, upserted or sent to again.
"""

import logging

from django.db import transaction
from django.utils import timezone

from campaigns.counters import CounterName
from campaigns.erased import erased_address_keep
from campaigns.ledger import ledger_transition
from campaigns.models import Contact, ContactStatusChange, Membership, MessageRequest, Notification
from tracking.models import Event

logger = logging.getLogger(__name__)

E = Event.Type
# Events whose description is our own words (a bounce's type, a complaint's kind, which list
# was left), never the recipient's server's: kept.
_OWN_DESCRIPTIONS = (E.BOUNCED, E.COMPLAINED, E.UNSUBSCRIBED)
ERASED_DOMAIN = "erased.invalid"  # RFC 2606: never an address anyone has


def erased_email(contact_id: int) -> str:
    return f"erased-{contact_id}@{ERASED_DOMAIN}"


def contact_erase(*, contact_id: int) -> bool:
    """Erase the contact (see the module's docstring), in one transaction; False if there is
    no such contact, or it was erased already (erasing is idempotent)."""
    with transaction.atomic():
        # Locked first. A ledger row's foreign key locks the contact (FOR KEY SHARE) only when
        # its transaction commits (Django's keys are DEFERRABLE INITIALLY DEFERRED): a message
        # locks it as it finds it (campaigns.transactional), so it is either committed before
        # this (the check below sees it: emptied) or waits and then makes a new contact; a
        # row written without that lock (a freeze's, a job's chunk) and not committed yet is
        # not seen here, and fails at its own commit, to be written again without this
        # contact. The erase wins each of these races (tests/api/test_contacts_erase_race.py).
        contact = (
            Contact.objects.select_for_update()
            .filter(pk=contact_id, erased_at__isnull=True)
            .only("pk", "email", "status")
            .first()
        )
        if contact is None:
            return False
        erased_address_keep(address=contact.email, status=contact.status)
        mailed = Notification.objects.filter(contact_id=contact_id).exists()
        if not mailed:
            contact.delete()
        else:
            _skip_waiting(contact_id)
            _empty(contact_id)
    logger.info("contact %s erased (%s)", contact_id, "emptied" if mailed else "deleted")
    return True


def _skip_waiting(contact_id: int) -> None:
    # Its rows not claimed yet would otherwise be claimed later and read the emptied address
    # (erased-<id>@erased.invalid): they end skipped here, each counted in its campaign. A row
    # being claimed right now is either moved by the claim first (it read the real address
    # before the erase) or waits for this transaction and finds it skipped.
    waiting = Notification.objects.filter(contact_id=contact_id, status=Notification.Status.CREATED)
    by_campaign: dict[int, list[int]] = {}
    for row_id, campaign_id in waiting.values_list("id", "campaign_id"):
        by_campaign.setdefault(campaign_id, []).append(row_id)
    for campaign_id, ids in by_campaign.items():
        ledger_transition(
            ids=ids,
            from_statuses={Notification.Status.CREATED},
            to=Notification.Status.SKIPPED,
            reason="contact erased",
            counter=(campaign_id, CounterName.SKIPPED),
        )


def _empty(contact_id: int) -> None:
    now = timezone.now()
    events = Event.objects.filter(notification__contact_id=contact_id)
    events.update(ip=None, user_agent="", payload=None)
    events.exclude(type__in=_OWN_DESCRIPTIONS).update(description="")
    MessageRequest.objects.filter(notification__contact_id=contact_id).update(
        personalisation={}, reference=""
    )
    Membership.objects.filter(contact_id=contact_id).delete()
    ContactStatusChange.objects.filter(contact_id=contact_id).delete()
    Contact.objects.filter(pk=contact_id).update(
        email=erased_email(contact_id),
        first_name="",
        last_name="",
        attributes={},
        time_zone="",
        erased_at=now,
        updated_at=now,
    )
