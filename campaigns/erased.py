"""Erased addresses: what keeps an unsubscribed or suppressed address so once its contact is
erased (tracking.erase), without keeping the address.

The one rule: a contact made for an address whose digest is in ErasedAddress starts with the
status kept there, not `active`. Every writer that makes contacts takes its status from here:
the set-based ones (the import's and the API's upsert, a job's freeze, a transactional
message's find-or-make) embed `new_contact_status_sql`, the ORM ones (the admin's form, the
portable paths of the demo's SQLite) call `new_contact_statuses`. Both compute the same digest
(tests/campaigns/test_erased.py holds them to it).

The digest is SHA-256 of the normalized address: it identifies an address someone already
has, and cannot be turned back into a list of addresses. It is a pseudonym, not anonymous
(docs/API.md#erasing-a-contact says so).
"""

import hashlib
from collections.abc import Iterable

from campaigns.models import Contact, ErasedAddress

ACTIVE = Contact.Status.ACTIVE


def address_digest(address: str) -> str:
    """The digest kept of a normalized address."""
    return hashlib.sha256(address.encode("utf-8")).hexdigest()


def new_contact_status_sql(email_sql: str) -> str:
    """An SQL expression: the status a contact made now for the address `email_sql` (a column
    or placeholder holding a normalized address) starts with. PostgreSQL only."""
    table = ErasedAddress._meta.db_table
    # (Names from the model and the caller's code, never input.)
    select = f"SELECT ea.status FROM {table} ea"  # noqa: S608
    digest = f"encode(sha256(convert_to({email_sql}, 'UTF8')), 'hex')"
    return f"coalesce(({select} WHERE ea.digest = {digest}), '{ACTIVE}')"


def new_contact_statuses(addresses: Iterable[str]) -> dict[str, str]:
    """For these normalized addresses, the status a contact made now for each starts with
    (only the addresses that do not start `active` are in the answer). One query."""
    digests = {address_digest(address): address for address in addresses}
    if not digests:
        return {}
    kept = ErasedAddress.objects.filter(digest__in=list(digests)).values_list("digest", "status")
    return {digests[digest]: status for digest, status in kept}


def new_contact_status(address: str) -> str:
    return new_contact_statuses([address]).get(address, ACTIVE)


def status_for_new_address(*, status: str, address: str) -> str:
    """The status of a contact whose address changes to `address` (the admin's form, a
    PATCH): an active contact takes the address's kept status, so renaming a contact to an
    erased, suppressed address cannot lift the suppression; any other keeps its own."""
    return new_contact_status(address) if status == ACTIVE else status


def erased_address_keep(*, address: str, status: str) -> None:
    """Keep the status of an address whose contact is being erased, for when it comes back.
    An active one leaves nothing (and forgets what an earlier erasure kept: its owner came
    back and was resubscribed, with a reason, since)."""
    digest = address_digest(address)
    if status == ACTIVE:
        ErasedAddress.objects.filter(digest=digest).delete()
        return
    ErasedAddress.objects.update_or_create(digest=digest, defaults={"status": status})
