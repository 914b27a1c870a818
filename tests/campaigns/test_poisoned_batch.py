"""One bad contact never costs a batch: a recipient that cannot be sent ends `failed` with its
reason, alone, and everyone else in its SES call and batch is sent once and recorded.

The bad contacts are stored as an older release (or a bulk insert) could have stored them,
past today's address rule (campaigns.addresses), at the start, the middle and the end of an
SES call's group, on both send paths and through both SES clients.
"""

import pytest
from django.db.models import Count

from campaigns import delivery, services
from campaigns.models import Campaign, Contact, Membership, Notification
from tests.factories import CampaignFactory, ContactListFactory, TemplateFactory

pytestmark = pytest.mark.django_db

N = Notification.Status

# Accepted by Django's EmailValidator (and stored by earlier releases), refused by SES or by
# the MIME layer: each once took down its whole call.
BAD_SHAPES = ['"a\x01b{}"@example.com', "user{}@\u2603.com", '"john..doe{}"@example.com']
BAD_ADDRESSES = [shape.format(i) for i in range(3) for shape in BAD_SHAPES]
# A name that would put a line break into a rendered subject.
BAD_NAME = "Ann\r\nBcc: victim@evil.example"


def _campaign(ses, django_capture_on_commit_callbacks, *, send_path: str, positions) -> Campaign:
    """120 contacts (three SES calls of 50, 50 and 20 on the bulk path) with a bad address at
    each of `positions` and the CR/LF name at position 60, frozen and ready to send."""
    contact_list = ContactListFactory()
    contacts = [
        Contact(email=f"good{i}@example.org", first_name=f"Good{i}", last_name="L")
        for i in range(120)
    ]
    for position, address in zip(positions, BAD_ADDRESSES, strict=False):
        contacts[position].email = address
    contacts[60].first_name = BAD_NAME
    contacts = Contact.objects.bulk_create(contacts)  # past the rule, as old data is
    Membership.objects.bulk_create(
        Membership(contact_list=contact_list, contact=contact) for contact in contacts
    )
    template = TemplateFactory(subject="Hi {{ first_name }}", text="Hello {{ first_name }}")
    campaign = CampaignFactory(contact_list=contact_list, template=template, send_path=send_path)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_send_now(campaign=campaign)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_start(campaign_id=campaign.pk)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENDING
    return campaign


# Start, middle and end of the first call's group (0-49), and of the last one (100-119).
POSITIONS = [0, 25, 49, 100, 110, 119]


@pytest.mark.parametrize("send_path", ["bulk", "rendered"])
def test_bad_contacts_fail_alone_and_everyone_else_is_sent_once(
    ses, ses_kind, django_capture_on_commit_callbacks, send_path
):
    campaign = _campaign(
        ses, django_capture_on_commit_callbacks, send_path=send_path, positions=POSITIONS
    )
    ids = Notification.objects.filter(campaign=campaign).values_list("id", flat=True)
    result = delivery.deliver_batch(campaign_id=campaign.pk, first_id=min(ids), last_id=max(ids))

    rows = Notification.objects.filter(campaign=campaign).select_related("contact")
    bad = {row.pk for row in rows if row.contact.email in BAD_ADDRESSES}
    assert len(bad) == len(POSITIONS)
    assert (result.sent, result.failed, result.unknown) == (114, 6, 0)
    for row in rows:
        if row.pk in bad:
            assert (row.status, row.reason, row.message_id) == (
                N.FAILED,
                "address not sendable",
                None,
            )
        else:
            assert row.status == N.SENT and row.message_id, row.contact.email

    # Every good recipient reached SES once, with the message id recorded for it.
    messages = ses.messages(header=f"X-Campaign:{campaign.pk}")
    by_address = {}
    for message in messages:
        for address in message["recipients"]:
            assert address not in by_address, f"{address} sent twice"
            by_address[address] = message
    sent = {row.contact.email: row.message_id for row in rows if row.status == N.SENT}
    assert set(by_address) == set(sent)
    assert {address: by_address[address]["message_id"] for address in sent} == sent
    # …each with its own merge data and tracking (no entry got another's or none).
    for row in rows:
        if row.status == N.SENT:
            message = by_address[row.contact.email]
            assert message["subject"].startswith("Hi "), message["subject"]
            assert "\r" not in message["subject"] and "\n" not in message["subject"]
            headers = {h["name"].lower(): h["value"] for h in message["headers"]}
            assert headers["list-unsubscribe"].startswith("<http")
    named = by_address["good60@example.org"]
    assert named["subject"] == "Hi Ann  Bcc: victim@evil.example"  # one header, one line
    assert "bcc" not in {h["name"].lower() for h in named["headers"]}

    # The report adds up, and the campaign finishes.
    counts = dict(
        Notification.objects.filter(campaign=campaign)
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    assert counts == {N.SENT: 114, N.FAILED: 6}
    assert services.campaign_finish_if_answered(campaign_id=campaign.pk)


def test_a_call_refused_for_one_entry_is_split_until_the_culprit_is_alone(
    ses, ses_kind, django_capture_on_commit_callbacks, monkeypatch
):
    """Should an address the rule lets through be one SES refuses (it refuses the whole call,
    "Illegal address"), the call is split in halves, which SES answered without sending:
    only the culprit fails, everyone else is sent once."""
    campaign = _campaign(ses, django_capture_on_commit_callbacks, send_path="bulk", positions=[17])
    monkeypatch.setattr(delivery, "address_sendable", lambda address: True)  # a gap in the rule
    ids = Notification.objects.filter(campaign=campaign).values_list("id", flat=True)
    result = delivery.deliver_batch(campaign_id=campaign.pk, first_id=min(ids), last_id=max(ids))
    assert (result.sent, result.failed) == (119, 1)
    failed = Notification.objects.get(campaign=campaign, status=N.FAILED)
    assert failed.contact.email == BAD_ADDRESSES[0]
    assert "BadRequestException" in failed.reason
    assert "@" not in failed.reason  # SES's words, without the address
    stats = ses.stats(header=f"X-Campaign:{campaign.pk}")
    assert (stats["recipients"], stats["duplicate_recipients"]) == (119, 0)
