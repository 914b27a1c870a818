from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.counters import campaign_counters
from campaigns.ledger import (
    claim_update,
    ledger_claim,
    ledger_pending_ids,
    ledger_release_claim,
    ledger_transition,
)
from campaigns.models import Notification
from tests.conftest import plan_nodes, unanalyzed_campaign
from tests.factories import CampaignFactory, ContactFactory, NotificationFactory

N = Notification.Status

ATTRIBUTES = {
    "plain": "Leeds",
    "quoted": 'say "hi"',
    "backslash": "a\\b",
    "unicode": "Zürich ✓",
    "control": "tab\there",
    "number": 3.5,
    "whole": 42,
    "flag": True,
    "nothing": None,
    "empty": "",
}


@pytest.mark.django_db
def test_claim_returns_the_contacts_attributes_as_stored():
    contact = ContactFactory(attributes=ATTRIBUTES)
    campaign = CampaignFactory()
    row = NotificationFactory(campaign=campaign, contact=contact)
    (claimed,) = ledger_claim(
        campaign_id=campaign.pk,
        contact_list_id=campaign.contact_list_id,
        first_id=row.pk,
        last_id=row.pk,
        claimed_at=timezone.now(),
        attributes=[*ATTRIBUTES, "missing"],
    )
    assert claimed.attributes == {**ATTRIBUTES, "missing": None}
    assert (claimed.id, claimed.email, claimed.skip_reason) == (row.pk, contact.email, "")
    row.refresh_from_db()
    assert row.status == Notification.Status.SENDING
    assert (
        ledger_claim(
            campaign_id=campaign.pk,
            contact_list_id=campaign.contact_list_id,
            first_id=row.pk,
            last_id=row.pk,
            claimed_at=timezone.now(),
        )
        == []
    )  # claimed once


@pytest.mark.django_db
def test_claims_read_only_their_rows_through_the_primary_key():
    """A campaign frozen since the last ANALYZE has no statistics: a batch's read of its
    pending rows and each of its claims must still read their rows by primary key, not every
    created row of the campaign (quadratic)."""
    from django.db import connection

    rows = unanalyzed_campaign(3_000)
    campaign = rows[0].campaign
    first_id, last_id = rows[2_000].pk, rows[2_499].pk
    pending = ledger_pending_ids(campaign_id=campaign.pk, first_id=first_id, last_id=last_id)
    assert pending == [row.pk for row in rows[2_000:2_500]]
    sql, params = claim_update(
        campaign_id=campaign.pk,
        first_id=pending[100],
        last_id=pending[149],
        claimed_at=timezone.now(),
    )
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        ((plan,),) = cursor.fetchall()
    nodes = plan_nodes(plan[0]["Plan"])
    # An index scan, or a bitmap scan (once the table has statistics): by primary key only.
    assert {node["Index Name"] for node in nodes if "Index Name" in node} == {
        f"{Notification._meta.db_table}_pkey"
    }
    (scan,) = [n for n in nodes if n.get("Relation Name") and n["Node Type"] != "ModifyTable"]
    assert scan["Actual Rows"] == 50
    assert scan.get("Rows Removed by Filter", 0) == 0


@pytest.mark.django_db
def test_a_claim_of_unknown_outcome_gives_back_exactly_its_rows():
    """A claim whose connection broke may or may not have happened: its stamp gives back the
    rows it took, and never rows another claim of the same range holds."""
    campaign = CampaignFactory()
    rows = NotificationFactory.create_batch(6, campaign=campaign)
    claim = {"campaign_id": campaign.pk, "contact_list_id": campaign.contact_list_id}
    mine, theirs = timezone.now(), timezone.now() + timedelta(microseconds=1)
    # Another batch claimed the first three, this one the next three.
    ledger_claim(**claim, first_id=rows[0].pk, last_id=rows[2].pk, claimed_at=theirs)
    ledger_claim(**claim, first_id=rows[3].pk, last_id=rows[5].pk, claimed_at=mine)
    released = ledger_release_claim(
        campaign_id=campaign.pk, first_id=rows[0].pk, last_id=rows[-1].pk, claimed_at=mine
    )
    assert released == 3
    statuses = list(
        Notification.objects.filter(campaign=campaign)
        .order_by("pk")
        .values_list("status", flat=True)
    )
    assert statuses == [N.SENDING] * 3 + [N.CREATED] * 3


@pytest.mark.django_db
def test_claims_are_hot_updates_that_touch_no_index():
    """The ledger's claim (created → sending) rewrites each row in its own page and adds no
    index entry: no index covers the columns it sets, and the table keeps free space in its
    pages (fillfactor 50). One index on `status` would make every claim write to every index."""
    from django.db import connection

    rows = unanalyzed_campaign(600)
    campaign = rows[0].campaign
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [table])
        assert "fillfactor=50" in (cursor.fetchone()[0] or [])
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_updated(%s::regclass), "
            "pg_stat_get_xact_tuples_hot_updated(%s::regclass)",
            [table, table],
        )
        updated_before, hot_before = cursor.fetchone()
        claimed = ledger_claim(
            campaign_id=campaign.pk,
            contact_list_id=campaign.contact_list_id,
            first_id=rows[0].pk,
            last_id=rows[-1].pk,
            claimed_at=timezone.now(),
        )
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_updated(%s::regclass), "
            "pg_stat_get_xact_tuples_hot_updated(%s::regclass)",
            [table, table],
        )
        updated, hot = cursor.fetchone()
    assert len(claimed) == 600
    assert (updated - updated_before, hot - hot_before) == (600, 600)


@pytest.mark.django_db
def test_accepted_rows_and_their_counter_move_together():
    """The record of an SES answer: sending → sent with each MessageId, and the campaign's
    `sent` counter raised by the rows that actually moved (one statement on PostgreSQL)."""
    campaign = CampaignFactory()
    sending, sent_before = (
        NotificationFactory.create_batch(count, campaign=campaign, status=status)
        for status, count in ((N.SENDING, 3), (N.SENT, 1))
    )
    accepted = {row.pk: f"msg-{row.pk}" for row in [*sending, *sent_before]}
    accepted[sending[2].pk] = "msg,with,commas"  # (SES's never have one; still recorded)
    moved = ledger_transition(
        ids=list(accepted),
        from_statuses={N.SENDING},
        to=N.SENT,
        message_ids=accepted,
        counter=(campaign.pk, "sent"),
    )
    assert moved == 3  # the row already sent is not moved again, nor counted
    assert campaign_counters(campaign_id=campaign.pk) == {"sent": 3}
    rows = dict(Notification.objects.filter(campaign=campaign).values_list("pk", "message_id"))
    assert rows == {
        **{row.pk: f"msg-{row.pk}" for row in sending[:2]},
        sending[2].pk: "msg,with,commas",
        sent_before[0].pk: None,
    }

    # Without commas, the message ids travel as one comma-separated text.
    more = NotificationFactory(campaign=campaign, status=N.SENDING)
    assert (
        ledger_transition(
            ids=[more.pk],
            from_statuses={N.SENDING},
            to=N.SENT,
            message_ids={more.pk: "0100abc-def-000000"},
            counter=(campaign.pk, "sent"),
        )
        == 1
    )
    more.refresh_from_db()
    assert (more.status, more.message_id) == (N.SENT, "0100abc-def-000000")
    assert campaign_counters(campaign_id=campaign.pk) == {"sent": 4}

    # Nothing moved: no counter is written.
    assert (
        ledger_transition(
            ids=[sending[0].pk],
            from_statuses={N.SENDING},
            to=N.SENT,
            message_ids={sending[0].pk: "again"},
            counter=(campaign.pk, "sent"),
        )
        == 0
    )
    assert campaign_counters(campaign_id=campaign.pk) == {"sent": 4}


@pytest.mark.django_db
def test_a_claim_by_ids_takes_only_those_rows_of_its_range():
    """A batch of messages (campaigns.ready) names its rows: the other `created` rows of the
    range (a scheduled message, another batch's) are neither read, claimed nor given back."""
    campaign = CampaignFactory()
    rows = NotificationFactory.create_batch(5, campaign=campaign)
    mine = [rows[0].pk, rows[2].pk, rows[4].pk]
    span = {"campaign_id": campaign.pk, "first_id": rows[0].pk, "last_id": rows[-1].pk}
    assert ledger_pending_ids(**span, ids=mine) == mine
    stamp = timezone.now()
    claimed = ledger_claim(
        **span, contact_list_id=campaign.contact_list_id, claimed_at=stamp, ids=mine
    )
    assert [row.id for row in claimed] == mine
    assert (
        ledger_claim(  # exclusive: a second claim of the same ids takes nothing
            **span, contact_list_id=campaign.contact_list_id, claimed_at=stamp, ids=mine
        )
        == []
    )
    statuses = dict(Notification.objects.filter(campaign=campaign).values_list("pk", "status"))
    assert [statuses[row.pk] for row in rows] == [N.SENDING, N.CREATED] * 2 + [N.SENDING]
    assert ledger_release_claim(**span, claimed_at=stamp, ids=mine[:2]) == 2
    assert ledger_pending_ids(**span, ids=mine) == mine[:2]
