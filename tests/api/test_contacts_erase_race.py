"""An erase (tracking.erase) racing a new ledger row for the same contact, with real
connections in threads: whichever comes first, the erase (the API's DELETE, the admin's
delete) succeeds, a message is accepted (never a 500) and never attached to a contact erased
before it, and a ledger row written without the contact's lock (a freeze's, a job's chunk)
is the one that fails, at its commit, to be written again.

Why it needed care: Django's foreign keys are DEFERRABLE INITIALLY DEFERRED, so a ledger row
takes its lock on the contact only when its transaction commits. A message accepted while an
erase was in progress failed at commit (the contact deleted: a 500) or was attached to the
emptied row (a mailed contact). The message's statement now locks the contact it finds
(campaigns.transactional), so it waits for the erase and then makes a new contact."""

import threading
import time

import pytest
from django.db import IntegrityError, connection, transaction

from campaigns.models import Contact, Membership, MessageRequest, Notification
from campaigns.transactional import message_create
from tests.api.helpers import api_client
from tests.factories import CampaignFactory, ContactFactory, ContactListFactory, TemplateFactory
from tracking.erase import erased_email

pytestmark = pytest.mark.django_db(transaction=True)

ADDRESS = "race@example.com"


def waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]


def wait_for_waiters(n: int) -> None:
    deadline = time.monotonic() + 10
    while waiting_on_a_lock() < n:
        assert time.monotonic() < deadline, f"fewer than {n} sessions wait on a lock"
        time.sleep(0.02)


def in_thread(results: dict, key: str, call) -> threading.Thread:
    """Run `call` on its own connection; its result (or its exception) in results[key]."""

    def target():
        try:
            results[key] = call()
        except Exception as err:  # noqa: BLE001 (the test reads it)
            results[key] = err
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def erase_call(by: str, contact_id: int, admin_client):
    if by == "api":
        client = api_client(scopes=("contacts:write",))
        return lambda: client.delete(f"/api/v1/contacts/{contact_id}").status_code
    path = f"/admin/campaigns/contact/{contact_id}/delete/"
    return lambda: admin_client.post(path, {"post": "yes"}).status_code


@pytest.mark.parametrize("by", ["api", "admin"])
@pytest.mark.parametrize("mailed", [False, True], ids=["never-mailed", "mailed"])
def test_a_message_arriving_during_an_erase_makes_a_new_contact(by, mailed, admin_client):
    TemplateFactory(slug="receipt", subject="Hi", html="<p>Hi</p>", text="Hi")
    contact = ContactFactory(email=ADDRESS)
    Membership.objects.create(contact_list=ContactListFactory(), contact=contact)
    if mailed:
        Notification.objects.create(campaign=CampaignFactory(), contact=contact, status="sent")
    sender = api_client(scopes=("messages:send",))
    results: dict = {}
    release = threading.Event()

    def hold_the_membership():
        # The erase locks the contact, then waits here (deleting its memberships): the
        # message arrives while the erase is in progress.
        with transaction.atomic():
            list(Membership.objects.select_for_update().filter(contact_id=contact.pk))
            release.wait(10)

    holder = in_thread(results, "holder", hold_the_membership)
    time.sleep(0.2)
    eraser = in_thread(results, "erase", erase_call(by, contact.pk, admin_client))
    wait_for_waiters(1)
    message = in_thread(
        results,
        "message",
        lambda: sender.post(
            "/api/v1/messages",
            {"template": "receipt", "to": ADDRESS, "personalisation": {"name": "Grace"}},
            format="json",
        ),
    )
    wait_for_waiters(2)  # the message waits for the erase
    release.set()
    for thread in (holder, eraser, message):
        thread.join(20)

    assert results["erase"] == (204 if by == "api" else 302), results
    answer = results["message"]
    assert not isinstance(answer, Exception), answer
    assert answer.status_code == 202, answer.content
    sent = Notification.objects.get(pk=answer.json()["id"])
    assert sent.contact_id != contact.pk
    assert sent.contact.email == ADDRESS and sent.contact.erased_at is None
    # Nothing new on the erased contact: its row (if it was mailed) keeps no personalisation.
    erased = Contact.objects.filter(pk=contact.pk).first()
    if mailed:
        assert erased.email == erased_email(contact.pk) and erased.erased_at is not None
        assert Notification.objects.filter(contact_id=contact.pk).count() == 1
    else:
        assert erased is None
    assert (
        not MessageRequest.objects.filter(notification__contact_id=contact.pk)
        .exclude(personalisation={})
        .exists()
    )


def test_an_erase_waits_for_a_message_being_accepted_then_empties_it():
    """The message first: the erase waits for its transaction, then sees it was mailed and
    empties the contact, its new message's personalisation too."""
    template = TemplateFactory(slug="receipt", subject="Hi", html="<p>Hi</p>", text="Hi")
    contact = ContactFactory(email=ADDRESS)
    client = api_client(scopes=("contacts:write",))
    results: dict = {}
    release = threading.Event()

    def accept_and_hold():
        with transaction.atomic():
            made = message_create(
                api_key=None, template=template, email=ADDRESS, personalisation={"n": "Grace"}
            )
            release.wait(10)
        return made.pk

    message = in_thread(results, "message", accept_and_hold)
    deadline = time.monotonic() + 10
    while not _uncommitted_message():  # the message is written, not committed
        assert time.monotonic() < deadline, "no message being written"
        time.sleep(0.02)
    eraser = in_thread(results, "erase", lambda: client.delete(f"/api/v1/contacts/{contact.pk}"))
    wait_for_waiters(1)  # the erase waits for the message's transaction
    release.set()
    for thread in (message, eraser):
        thread.join(20)

    assert results["erase"].status_code == 204, results
    accepted = Notification.objects.get(pk=results["message"])
    assert accepted.contact_id == contact.pk  # accepted before the erase: its contact's
    emptied = Contact.objects.get(pk=contact.pk)
    assert emptied.erased_at is not None and emptied.email == erased_email(contact.pk)
    assert MessageRequest.objects.get(notification=accepted).personalisation == {}


def _uncommitted_message() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            " WHERE c.relname = %s AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()",
            [Notification._meta.db_table],
        )
        return cursor.fetchone()[0] > 0


def test_a_message_to_an_erased_contact_by_id_is_refused():
    TemplateFactory(slug="receipt", subject="Hi", html="<p>Hi</p>", text="Hi")
    contact = ContactFactory(email=ADDRESS)
    Notification.objects.create(campaign=CampaignFactory(), contact=contact, status="sent")
    assert (
        api_client(scopes=("contacts:write",)).delete(f"/api/v1/contacts/{contact.pk}").status_code
        == 204
    )
    answer = api_client(scopes=("messages:send",)).post(
        "/api/v1/messages", {"template": "receipt", "contact": contact.pk}, format="json"
    )
    assert answer.status_code == 422, answer.content
    assert answer.json()["errors"][0]["code"] == "contact_not_found"
    assert Notification.objects.filter(contact_id=contact.pk).count() == 1


@pytest.mark.parametrize("by", ["api", "admin"])
@pytest.mark.parametrize("commit", [True, False], ids=["committed", "rolled-back"])
def test_an_erase_racing_a_ledger_row_written_without_the_lock(by, commit, admin_client):
    """A ledger row written by a path that does not lock the contact first (a campaign's
    freeze, a job's rows): its foreign key is checked at its commit only."""
    contact = ContactFactory(email=ADDRESS)
    campaign = CampaignFactory()
    results: dict = {}
    release = threading.Event()

    def write_and_hold():
        with transaction.atomic():
            Notification.objects.create(campaign=campaign, contact=contact, status="created")
            release.wait(10)
            if not commit:
                transaction.set_rollback(True)
        return "written"

    writer = in_thread(results, "writer", write_and_hold)
    deadline = time.monotonic() + 10
    while not _uncommitted_message():
        assert time.monotonic() < deadline, "no ledger row being written"
        time.sleep(0.02)
    eraser = in_thread(results, "erase", erase_call(by, contact.pk, admin_client))
    time.sleep(1.0)
    release.set()
    for thread in (writer, eraser):
        thread.join(30)
    # The erase never waits for it, and wins: the contact (never mailed, as far as the erase
    # could see) is deleted. The writer's commit then fails on its key and rolls back (a
    # freeze's chunk is written again by the sweeper, without the contact: its memberships
    # are gone).
    assert results["erase"] == (204 if by == "api" else 302), results
    assert not Contact.objects.filter(pk=contact.pk).exists()
    if commit:
        assert isinstance(results["writer"], IntegrityError), results
    else:
        assert results["writer"] == "written", results
    assert not Notification.objects.exists()


@pytest.mark.parametrize("by", ["api", "admin"])
def test_an_erase_whose_contact_gets_a_ledger_row_committed_meanwhile(by, admin_client):
    """The ledger row is written (not committed) before the erase locks the contact, and
    committed while the erase is in progress: the two wait for each other at their commits."""
    contact = ContactFactory(email=ADDRESS)
    Membership.objects.create(contact_list=ContactListFactory(), contact=contact)
    campaign = CampaignFactory()
    results: dict = {}
    go_commit, release = threading.Event(), threading.Event()

    def write_and_hold():
        with transaction.atomic():
            Notification.objects.create(campaign=campaign, contact=contact, status="created")
            go_commit.wait(10)
        return "written"

    def hold_the_membership():
        with transaction.atomic():
            list(Membership.objects.select_for_update().filter(contact_id=contact.pk))
            release.wait(10)

    writer = in_thread(results, "writer", write_and_hold)
    deadline = time.monotonic() + 10
    while not _uncommitted_message():
        assert time.monotonic() < deadline, "no ledger row being written"
        time.sleep(0.02)
    holder = in_thread(results, "holder", hold_the_membership)
    time.sleep(0.2)
    eraser = in_thread(results, "erase", erase_call(by, contact.pk, admin_client))
    wait_for_waiters(1)  # the erase has the contact, and waits for the membership
    go_commit.set()  # the writer's commit checks its key: it waits for the erase
    wait_for_waiters(2)
    release.set()
    for thread in (writer, holder, eraser):
        thread.join(30)
    assert results["erase"] == (204 if by == "api" else 302), results
    assert isinstance(results["writer"], IntegrityError), results
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert not Notification.objects.exists()
