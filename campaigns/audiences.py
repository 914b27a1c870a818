"""Audiences as a marketer sees them: who on a list still gets mail, typed custom fields, adding
to and removing from lists, and resubscribing with a recorded reason.

Reads (selectors) and writes (services) of these pages; every change of a contact's status or
of a list-level unsubscribe goes through one guarded function here and leaves a
ContactStatusChange behind.
"""

import datetime
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.utils import timezone

from campaigns.contact_fields import contact_text_check
from campaigns.models import (
    Contact,
    ContactList,
    ContactStatusChange,
    CustomField,
    Membership,
)
from campaigns.services import contact_attribute_name, contact_list_add

logger = logging.getLogger(__name__)

S = Contact.Status
NOT_ACTIVE = (S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED)

# Longest text value of a custom field: a merged value lands in subjects and bodies; a
# megabyte pasted by mistake should be refused where it is typed, not sent.
CUSTOM_TEXT_MAX = 1000
REASON_MAX = 1000
# Numbers stay exact in JSON and in a spreadsheet (a double holds 15 significant digits).
NUMBER_MAX = Decimal(10) ** 15
YES = {"yes", "y", "true", "1", "oui", "ja", "si", "sí"}
NO = {"no", "n", "false", "0", "non", "nein"}


# -- typed custom fields ----------------------------------------------------------------------


def custom_field_name_check(name: str) -> str:
    """`name` unchanged if templates can use it as is, else ValidationError saying why."""
    if contact_attribute_name(name) != name:
        suggestion = contact_attribute_name(name)
        raise ValidationError(
            "A field name holds only lower-case letters, digits and underscores and starts "
            "with a letter" + (f" (for example “{suggestion}”)." if suggestion else "."),
            code="invalid",
        )
    if name in ("email", "first_name", "last_name"):
        raise ValidationError(f"“{name}” is already a contact's own field.", code="reserved")
    return name


def custom_field_value(field: CustomField, raw: object) -> str | int | float | bool | None:
    """The value `raw` (text typed in a form or read from a file, or an already typed value)
    as stored in Contact.attributes for this field: text as text, numbers as numbers, dates as
    ISO text (2025-03-31), yes/no as true/false; None for an empty value. Raises
    ValidationError with the reason for a value the field cannot hold."""
    label = f"“{field.label or field.name}”"
    if raw is None:
        return None
    if isinstance(raw, str):
        contact_text_check(raw, label=f"value of {label}")
        raw = raw.strip()
        if raw == "":
            return None
        if len(raw) > CUSTOM_TEXT_MAX:
            raise ValidationError(
                f"The value of {label} has {len(raw)} characters; at most {CUSTOM_TEXT_MAX}.",
                code="max_length",
            )
    kind = field.type
    if kind == CustomField.Type.TEXT:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValidationError(f"{label} holds text.", code="invalid")
        return raw if isinstance(raw, str) else str(raw)
    if kind == CustomField.Type.NUMBER:
        return _number(raw, label)
    if kind == CustomField.Type.DATE:
        return _date(raw, label)
    if kind == CustomField.Type.YES_NO:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in YES:
            return True
        if text in NO:
            return False
        raise ValidationError(f"{label} is yes or no, not “{raw}”.", code="invalid")
    raise ValidationError(f"{label} has an unknown type.", code="invalid")


def _number(raw: object, label: str) -> int | float:
    if isinstance(raw, bool):
        raise ValidationError(f"{label} is a number, not yes/no.", code="invalid")
    if isinstance(raw, int):
        # Bounded as any number is (10**30 is no exact number in a spreadsheet), before it is
        # ever written out: str() of an int of over 4,300 digits raises.
        if abs(raw) >= NUMBER_MAX:
            raise ValidationError(
                f"{label} is too large a number (at most 15 digits before the point).",
                code="invalid",
            )
        return raw
    if isinstance(raw, float):
        number = Decimal(repr(raw)) if math.isfinite(raw) else None
    else:
        try:
            # A space or an underscore between thousands is common; a comma is not accepted
            # because it is the decimal mark in half of Europe (1,5 or 1,500?).
            number = Decimal(str(raw).replace(" ", "").replace("_", ""))
        except InvalidOperation:
            number = None
    if number is None or not number.is_finite() or len(str(raw)) > 30:
        raise ValidationError(
            f"{label} is a number such as 42 or 3.5 (a point for decimals), not “{raw}”.",
            code="invalid",
        )
    if abs(number) >= NUMBER_MAX:
        raise ValidationError(
            f"{label} is too large a number (at most 15 digits before the point).",
            code="invalid",
        )
    return int(number) if number == number.to_integral_value() else float(number)


def _date(raw: object, label: str) -> str:
    if isinstance(raw, datetime.datetime):
        return raw.date().isoformat()
    if isinstance(raw, datetime.date):
        return raw.isoformat()
    try:
        return datetime.date.fromisoformat(str(raw)).isoformat()
    except ValueError:
        raise ValidationError(
            f"{label} is a date written year-month-day, such as 2025-03-31, not “{raw}”.",
            code="invalid",
        ) from None


def custom_fields() -> list[CustomField]:
    return list(CustomField.objects.order_by("name"))


# -- per-list counts --------------------------------------------------------------------------


@dataclass(frozen=True)
class ListCounts:
    subscribed: int = 0  # gets the list's next campaign
    unsubscribed_list: int = 0  # unsubscribed from this list only
    unsubscribed_all: int = 0  # unsubscribed from all mail
    suppressed: int = 0  # bounced or complained: never mailed again

    @property
    def total(self) -> int:
        return self.subscribed + self.unsubscribed_list + self.unsubscribed_all + self.suppressed


def list_counts(*, list_ids: Iterable[int]) -> dict[int, ListCounts]:
    """Each list's members by what happens to them at the next send, for the lists of one
    changelist page. A member who unsubscribed from all mail or is suppressed counts there even
    if they also left the list: the stronger reason wins.

    Three grouped queries over all the page's lists, whatever their number: the members, the
    members who get no mail (starting from the few contacts that are not active:
    contact_not_active), and the active ones who left the list (membership_unsubscribed). For a
    page holding a 1M-member list they took 1.6-2.0 s together on the shared test VM, against
    2.6-3.7 s for one query joining every member to its contact (docs/PERFORMANCE.md, "List
    counts")."""
    list_ids = list(list_ids)
    if not list_ids:
        return {}
    members = Membership.objects.filter(contact_list_id__in=list_ids).order_by()
    totals = dict(
        members.values("contact_list_id")
        .annotate(n=Count("contact_id"))
        .values_list("contact_list_id", "n")
    )
    no_mail: dict[int, dict[str, int]] = {}
    for list_id, status, n in (
        members.filter(contact__status__in=NOT_ACTIVE)
        .values("contact_list_id", "contact__status")
        .annotate(n=Count("pk"))
        .values_list("contact_list_id", "contact__status", "n")
    ):
        no_mail.setdefault(list_id, {})[status] = n
    left = dict(
        members.filter(unsubscribed_at__isnull=False, contact__status=S.ACTIVE)
        .values("contact_list_id")
        .annotate(n=Count("pk"))
        .values_list("contact_list_id", "n")
    )
    counts = {}
    for pk in list_ids:
        statuses = no_mail.get(pk, {})
        unsubscribed_all = statuses.get(S.UNSUBSCRIBED, 0)
        suppressed = statuses.get(S.BOUNCED, 0) + statuses.get(S.COMPLAINED, 0)
        unsubscribed_list = left.get(pk, 0)
        counts[pk] = ListCounts(
            subscribed=totals.get(pk, 0) - unsubscribed_all - suppressed - unsubscribed_list,
            unsubscribed_list=unsubscribed_list,
            unsubscribed_all=unsubscribed_all,
            suppressed=suppressed,
        )
    return counts


def contact_memberships(*, contact: Contact) -> list[Membership]:
    """The lists this contact is on, with when they joined and left each."""
    return list(
        Membership.objects.filter(contact=contact)
        .select_related("contact_list")
        .order_by("contact_list__name")
    )


def unsubscribed_list_names(*, contact_ids: Iterable[int]) -> dict[int, str]:
    """For these contacts, the names of the lists each unsubscribed from, "; "-joined (one
    query; contacts who left no list are absent)."""
    names: dict[int, list[str]] = {}
    rows = (
        Membership.objects.filter(contact_id__in=list(contact_ids), unsubscribed_at__isnull=False)
        .order_by("contact_id", "contact_list__name")
        .values_list("contact_id", "contact_list__name")
    )
    for contact_id, name in rows:
        names.setdefault(contact_id, []).append(name)
    return {contact_id: "; ".join(lists) for contact_id, lists in names.items()}


def list_unsubscribe_count() -> Subquery:
    """Per contact (an annotation): how many lists they unsubscribed from."""
    return Subquery(
        Membership.objects.filter(contact=OuterRef("pk"), unsubscribed_at__isnull=False)
        .values("contact")
        .annotate(n=Count("pk"))
        .values("n")
    )


# -- lists: add and remove --------------------------------------------------------------------


@dataclass(frozen=True)
class ListChange:
    changed: int  # added, or removed
    kept: int  # already on the list (add), or kept as unsubscribed (remove / add)


def contact_list_add_contacts(
    *, contact_list: ContactList, contact_ids: Iterable[int]
) -> ListChange:
    """Add these contacts to the list. Someone who unsubscribed from it stays unsubscribed:
    their membership row is kept with its date, and adding is not consent (resubscribe is
    membership_resubscribe, with a reason)."""
    ids = set(contact_ids)
    with transaction.atomic():
        before = set(
            Membership.objects.filter(contact_list=contact_list, contact_id__in=ids).values_list(
                "contact_id", flat=True
            )
        )
        contact_list_add(contact_list=contact_list, contact_ids=sorted(ids - before))
    logger.info("list %s: %s contacts added", contact_list.pk, len(ids - before))
    return ListChange(changed=len(ids - before), kept=len(before))


def contact_list_remove_contacts(
    *, contact_list: ContactList, contact_ids: Iterable[int]
) -> ListChange:
    """Remove these contacts from the list. A member who unsubscribed from it keeps their row
    (they no longer get its mail either way), so adding them again, by hand or by an import,
    cannot subscribe them again without a recorded reason."""
    ids = list(contact_ids)
    members = Membership.objects.filter(contact_list=contact_list, contact_id__in=ids)
    with transaction.atomic():
        kept = members.filter(unsubscribed_at__isnull=False).count()
        removed, _ = members.filter(unsubscribed_at__isnull=True).delete()
    logger.info(
        "list %s: %s contacts removed, %s kept as unsubscribed", contact_list.pk, removed, kept
    )
    return ListChange(changed=removed, kept=kept)


# -- unsubscribe and suppress ----------------------------------------------------------------


def membership_unsubscribe_set(*, list_id: int, contact_id: int, now) -> bool:
    """Set unsubscribed_at on the membership; True if it changed. A recipient no longer on the
    list (removed since the send) gets a membership that records the unsubscribe, so adding
    them back (an import, the admin) cannot subscribe them again. (The recipient's own
    unsubscribe, tracking.unsubscribe, and contact_unsubscribe below.)"""
    updated = Membership.objects.filter(
        contact_list_id=list_id, contact_id=contact_id, unsubscribed_at__isnull=True
    ).update(unsubscribed_at=now)
    if updated:
        return True
    _, created = Membership.objects.get_or_create(
        contact_list_id=list_id, contact_id=contact_id, defaults={"unsubscribed_at": now}
    )
    if created:
        return True
    # Already unsubscribed, or a membership added meanwhile (an import racing us): set it.
    return bool(
        Membership.objects.filter(
            contact_list_id=list_id, contact_id=contact_id, unsubscribed_at__isnull=True
        ).update(unsubscribed_at=now)
    )


SUPPRESSED = (S.BOUNCED, S.COMPLAINED)


def contact_unsubscribe(
    *, contact: Contact, contact_list: ContactList | None, user, reason: str, api_key=None
) -> bool:
    """Unsubscribe a contact from one list, or from all mail (`contact_list` None), on someone
    else's word (an integration syncing its own opt-outs; the recipient's own click is
    tracking.unsubscribe), recording who and why; True if it changed anything. A contact
    already unsubscribed (or suppressed) that way is left as is."""
    reason = (reason or "").strip()[:REASON_MAX]
    now = timezone.now()
    with transaction.atomic():
        if contact_list is not None:
            changed = membership_unsubscribe_set(
                list_id=contact_list.pk, contact_id=contact.pk, now=now
            )
            if changed:
                Contact.objects.filter(pk=contact.pk).update(updated_at=now)
                ContactStatusChange.objects.create(
                    contact=contact,
                    contact_list=contact_list,
                    list_name=contact_list.name,
                    from_status="subscribed",
                    to_status="unsubscribed",
                    user=user,
                    api_key=api_key,
                    reason=reason,
                )
        else:
            changed = _status_move(contact, {S.ACTIVE}, S.UNSUBSCRIBED, user, api_key, reason, now)
    logger.info(
        "contact %s unsubscribed from %s by user %s key %s: changed=%s",
        contact.pk,
        f"list {contact_list.pk}" if contact_list else "all mail",
        getattr(user, "pk", None),
        getattr(api_key, "pk", None),
        changed,
    )
    return changed


def contact_suppress(*, contact: Contact, status: str, user, reason: str, api_key=None) -> bool:
    """Suppress a contact (`bounced`: the address does not work; `complained`: its owner
    reported spam) on someone else's word (a CRM's own suppression list), recording who and
    why; True if it changed. An active or unsubscribed contact can be; a suppressed one keeps
    its first reason."""
    if status not in SUPPRESSED:
        raise ValueError(f"a contact is suppressed as bounced or complained, not {status!r}")
    reason = (reason or "").strip()[:REASON_MAX]
    with transaction.atomic():
        changed = _status_move(
            contact, {S.ACTIVE, S.UNSUBSCRIBED}, status, user, api_key, reason, timezone.now()
        )
    logger.info(
        "contact %s suppressed as %s by user %s key %s: changed=%s",
        contact.pk,
        status,
        getattr(user, "pk", None),
        getattr(api_key, "pk", None),
        changed,
    )
    return changed


def _status_move(
    contact: Contact, from_statuses: set, to: str, user, api_key, reason: str, now
) -> bool:
    """Contact.status from one of `from_statuses` to `to` (a guarded UPDATE) and its record."""
    was = (
        Contact.objects.select_for_update()
        .filter(pk=contact.pk)
        .values_list("status", flat=True)
        .first()
    )
    if was not in from_statuses:
        return False
    Contact.objects.filter(pk=contact.pk, status=was).update(status=to, updated_at=now)
    ContactStatusChange.objects.create(
        contact=contact, from_status=was, to_status=to, user=user, api_key=api_key, reason=reason
    )
    return True


# -- resubscribe ------------------------------------------------------------------------------


class ResubscribeError(ValueError):
    """A resubscribe that cannot be done; the message is for the marketer."""


def _reason_check(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ResubscribeError(
            "Say why: for example, “asked by email on 3 March to get the newsletter again”."
        )
    if len(reason) > REASON_MAX:
        raise ResubscribeError(f"The reason has {len(reason)} characters; at most {REASON_MAX}.")
    return reason


def contact_resubscribe(
    *, contact: Contact, user, reason: str, confirm_suppressed: bool = False
) -> ContactStatusChange:
    """Let an unsubscribed, bounced or complained contact get mail again, recording who, when
    and why. Bounced and complained contacts need `confirm_suppressed`: mail to an address that
    bounced hard, or to someone who reported spam, hurts the sender's reputation with SES."""
    reason = _reason_check(reason)
    with transaction.atomic():
        contact = Contact.objects.select_for_update().get(pk=contact.pk)
        was = contact.status
        if was == S.ACTIVE:
            raise ResubscribeError("This contact already gets mail.")
        if was in (S.BOUNCED, S.COMPLAINED) and not confirm_suppressed:
            raise ResubscribeError(
                "This address bounced or its owner reported spam: tick the box to confirm "
                "you know it is deliverable and wanted."
            )
        Contact.objects.filter(pk=contact.pk, status=was).update(
            status=S.ACTIVE, updated_at=timezone.now()
        )
        change = ContactStatusChange.objects.create(
            contact=contact, from_status=was, to_status=S.ACTIVE, user=user, reason=reason
        )
    logger.info(
        "contact %s resubscribed from %s by user %s", contact.pk, was, getattr(user, "pk", None)
    )
    return change


def membership_resubscribe(
    *, contact: Contact, contact_list: ContactList, user, reason: str
) -> ContactStatusChange:
    """Subscribe a contact again to one list they unsubscribed from, recording who, when and
    why. Their status for all mail is not changed (contact_resubscribe does that)."""
    reason = _reason_check(reason)
    with transaction.atomic():
        updated = Membership.objects.filter(
            contact=contact, contact_list=contact_list, unsubscribed_at__isnull=False
        ).update(unsubscribed_at=None)
        if not updated:
            raise ResubscribeError("This contact has not unsubscribed from this list.")
        change = ContactStatusChange.objects.create(
            contact=contact,
            contact_list=contact_list,
            list_name=contact_list.name,
            from_status="unsubscribed",
            to_status="subscribed",
            user=user,
            reason=reason,
        )
    logger.info(
        "contact %s resubscribed to list %s by user %s",
        contact.pk,
        contact_list.pk,
        getattr(user, "pk", None),
    )
    return change
