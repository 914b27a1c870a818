"""The one set-based contact upsert: the CSV import's chunks and the API's upserts (one contact
or 10,000 a request) write contacts by address with it, in one statement per call.

The rule both share: a new address becomes a contact (its status from campaigns.erased: an
erased address that was unsubscribed or suppressed stays so); an existing one is updated only
if the caller chose to, and then only where a given value differs. An empty value never erases
a stored one (to clear a field, edit the contact), attributes are merged key by key, and the
status is never changed (an upsert is not consent: campaigns.audiences resubscribes). Lists
named are joined where the contact is not already on them; a list-level unsubscribe is kept.
Concurrent upserts of one address make one row: INSERT … ON CONFLICT, never read-then-write.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from django.db import connection
from django.utils import timezone

from campaigns.erased import new_contact_status_sql, new_contact_statuses
from campaigns.models import Contact, Membership

# The contact fields an upsert may set besides the address, and the attributes.
TEXT_FIELDS = ("first_name", "last_name", "time_zone")
STORED = (*TEXT_FIELDS, "attributes")


class ContactValues(Protocol):
    """A contact as an upsert takes it (campaigns.imports.Parsed, the API's checked rows)."""

    email: str  # normalized (campaigns.addresses)
    fields: dict[str, str]  # TEXT_FIELDS with a non-empty value
    attributes: dict  # custom fields, checked


@dataclass(frozen=True)
class Upserted:
    new: int
    updated: int
    # Address → id of the contacts made or changed (an unchanged contact is not in it).
    ids: dict[str, int]


def contact_would_change(values: ContactValues, stored: dict) -> bool:
    """Whether `values` change the contact whose STORED values are `stored`: a non-empty
    value that differs (the rule of the upsert's WHERE clause, _UPDATE)."""
    return any(stored[k] != v for k, v in values.fields.items()) or any(
        stored["attributes"].get(k) != v for k, v in values.attributes.items()
    )


def contacts_upsert(
    *, contacts: Sequence[ContactValues], update_existing: bool, list_ids: Sequence[int] = ()
) -> Upserted:
    """Upsert these contacts (one per address: the caller has refused repeats) and add them to
    the lists, in the caller's transaction."""
    if not contacts:
        return Upserted(0, 0, {})
    if connection.vendor != "postgresql":
        return _upsert_portable(contacts, update_existing, list_ids)
    return _upsert_pg(contacts, update_existing, list_ids)


# One statement: new contacts inserted, existing ones updated (if chosen) where a non-empty
# value differs, never their status. RETURNING tells inserted rows (xmax = 0) from updated
# ones; rows neither inserted nor changed are not returned. In address order, so two upserts
# naming the same addresses lock them in the same order (no deadlock).
_UPSERT = """
INSERT INTO campaigns_contact
    (email, first_name, last_name, time_zone, attributes, status, created_at, updated_at)
SELECT e, coalesce(f, ''), coalesce(l, ''), coalesce(z, ''), a, {status}, now(), now()
FROM unnest(%(emails)s::text[], %(firsts)s::text[], %(lasts)s::text[], %(zones)s::text[],
            %(attrs)s::jsonb[])
    AS t(e, f, l, z, a)
ORDER BY e
ON CONFLICT (email) DO {action}
RETURNING id, email, (xmax = 0) AS inserted
"""
# EXCLUDED holds '' for a value left empty (the value inserted): an empty value never erases,
# so '' keeps the stored value. The WHERE is contact_would_change's rule.
_UPDATE = """UPDATE SET
    first_name = coalesce(nullif(EXCLUDED.first_name, ''), campaigns_contact.first_name),
    last_name = coalesce(nullif(EXCLUDED.last_name, ''), campaigns_contact.last_name),
    time_zone = coalesce(nullif(EXCLUDED.time_zone, ''), campaigns_contact.time_zone),
    attributes = campaigns_contact.attributes || EXCLUDED.attributes,
    updated_at = now()
WHERE EXCLUDED.first_name NOT IN ('', campaigns_contact.first_name)
   OR EXCLUDED.last_name NOT IN ('', campaigns_contact.last_name)
   OR EXCLUDED.time_zone NOT IN ('', campaigns_contact.time_zone)
   OR NOT (campaigns_contact.attributes @> EXCLUDED.attributes)"""
_STATUS = new_contact_status_sql("e")
_ADD_ONLY_SQL = _UPSERT.format(action="NOTHING", status=_STATUS)
_UPDATE_SQL = _UPSERT.format(action=_UPDATE, status=_STATUS)
# Existing memberships stay as they are: a list-level unsubscribe is kept.
_MEMBERSHIPS_SQL = """
INSERT INTO campaigns_membership (contact_list_id, contact_id, created_at)
SELECT l, c.id, now()
FROM unnest(%(lists)s::bigint[]) AS l
CROSS JOIN campaigns_contact c WHERE c.email = ANY(%(emails)s::text[])
ORDER BY l, c.id
ON CONFLICT (contact_list_id, contact_id) DO NOTHING
"""


def _upsert_pg(contacts, update_existing, list_ids) -> Upserted:
    emails = [c.email for c in contacts]
    with connection.cursor() as cursor:
        cursor.execute(
            _UPDATE_SQL if update_existing else _ADD_ONLY_SQL,
            {
                "emails": emails,
                "firsts": [c.fields.get("first_name") for c in contacts],
                "lasts": [c.fields.get("last_name") for c in contacts],
                "zones": [c.fields.get("time_zone") for c in contacts],
                "attrs": [json.dumps(c.attributes) for c in contacts],
            },
        )
        returned = cursor.fetchall()
        if list_ids:
            cursor.execute(_MEMBERSHIPS_SQL, {"lists": list(list_ids), "emails": emails})
    new = sum(1 for *_, inserted in returned if inserted)
    return Upserted(new, len(returned) - new, {email: pk for pk, email, _ in returned})


def _upsert_portable(contacts, update_existing, list_ids) -> Upserted:
    """The same writes through the ORM in a few statements: for the demo's SQLite (PostgreSQL
    takes the one-statement upsert, several times faster)."""
    emails = [c.email for c in contacts]
    existing = {contact.email: contact for contact in Contact.objects.filter(email__in=emails)}
    statuses = new_contact_statuses(e for e in emails if e not in existing)
    created = [
        Contact(
            email=c.email,
            attributes=c.attributes,
            status=statuses.get(c.email, Contact.Status.ACTIVE),
            **c.fields,
        )
        for c in contacts
        if c.email not in existing
    ]
    Contact.objects.bulk_create(created)
    changed = []
    if update_existing:
        now = timezone.now()
        for c in contacts:
            contact = existing.get(c.email)
            if contact is None or not contact_would_change(
                c, {n: getattr(contact, n) for n in STORED}
            ):
                continue
            for name, value in c.fields.items():
                setattr(contact, name, value)
            contact.attributes = {**contact.attributes, **c.attributes}
            contact.updated_at = now  # bulk_update leaves auto_now alone
            changed.append(contact)
        Contact.objects.bulk_update(changed, [*STORED, "updated_at"])
    ids = dict(
        Contact.objects.filter(
            email__in=[c.email for c in created] + [c.email for c in changed]
        ).values_list("email", "pk")
    )
    if list_ids:
        pks = Contact.objects.filter(email__in=emails).values_list("pk", flat=True)
        Membership.objects.bulk_create(
            [Membership(contact_list_id=lid, contact_id=pk) for lid in list_ids for pk in pks],
            ignore_conflicts=True,
        )
    return Upserted(len(created), len(changed), ids)
