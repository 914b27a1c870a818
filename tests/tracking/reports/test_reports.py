"""Campaign reports from counters, the recount command, CSV exports, journeys, and the admin
pages that show them."""

import csv
import functools
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.admin.exports import csv_cell
from campaigns.admin.notifications import CappedCountPaginator
from campaigns.counters import campaign_counters, counters_add
from campaigns.models import Campaign, CampaignCounter, CampaignLink, Contact, Notification
from tests.factories import (
    REPORT_COUNTERS,
    CampaignFactory,
    ContactFactory,
    EventFactory,
    NotificationFactory,
    campaign_with_opens_and_clicks,
    list_with_contacts,
    sent_campaign,
)
from tracking.models import Event
from tracking.reports.journeys import contact_journeys, notification_journey
from tracking.reports.recount import campaign_counters_recount
from tracking.reports.report import campaign_report

pytestmark = pytest.mark.django_db

N = Notification.Status
E = Event.Type


# -- the report from counters -------------------------------------------------------------------


def test_report_numbers_and_rates_come_from_counters():
    campaign = campaign_with_opens_and_clicks()

    report = campaign_report(campaign_id=campaign.pk)

    assert (report.recipients, report.sent, report.failed, report.unknown, report.skipped) == (
        1000, 900, 10, 5, 25,
    )  # fmt: skip
    assert report.pending == 1000 - 940
    assert report.progress_percent == 90  # the bar: accepted by SES
    assert (report.delivered, report.bounced_hard, report.bounced_soft, report.bounced) == (
        800, 30, 20, 50,
    )  # fmt: skip
    assert (report.complained, report.rejected, report.delayed) == (2, 1, 7)
    assert (report.opens, report.unique_opens, report.human_opens, report.unique_human_opens) == (
        700, 400, 300, 200,
    )  # fmt: skip
    assert (report.clicks, report.unique_clicks, report.unique_human_clicks) == (150, 100, 50)
    assert report.unsubscribed == 8
    # Rates are out of delivered messages once delivery events arrive.
    assert report.rate_basis == "delivered"
    assert report.click_through_rate.value == pytest.approx(100 / 800)
    assert str(report.click_through_rate) == "12.5 %"
    assert report.human_click_through_rate.value == pytest.approx(50 / 800)
    assert report.click_to_open_rate.value == pytest.approx(100 / 400)
    assert report.human_click_to_open_rate.value == pytest.approx(50 / 200)
    assert report.open_rate.value == pytest.approx(400 / 800)
    assert report.bounce_rate.value == pytest.approx(50 / 900)
    assert report.unsubscribe_rate.value == pytest.approx(8 / 800)
    assert [(link.index, link.clicks, link.unique_clicks, link.human_clicks) for link in
            report.links] == [(0, 120, 80, 70), (1, 30, 25, 20)]  # fmt: skip


def test_rates_fall_back_to_sent_without_delivery_events_and_never_divide_by_zero():
    campaign = sent_campaign(recipients=10)
    counters_add(campaign_id=campaign.pk, deltas={"sent": 10, "unique_clicks": 3})
    report = campaign_report(campaign_id=campaign.pk)
    assert report.rate_basis == "sent"
    assert report.click_through_rate.value == pytest.approx(0.3)
    # No open seen (images off), yet 3 clicked: they opened it (docs/REPORTS.md).
    assert report.click_to_open_rate.value == 1.0
    assert report.open_rate.value == 0  # the open rate counts only the opens seen

    draft = CampaignFactory()
    empty = campaign_report(campaign_id=draft.pk)
    assert (empty.recipients, empty.pending, empty.progress_percent) == (0, 0, 0)
    assert empty.click_through_rate.value is None
    assert empty.timeline.labels == []


def test_timeline_fills_the_hours_between_with_zeros():
    campaign = campaign_with_opens_and_clicks()
    timeline = campaign_report(campaign_id=campaign.pk).timeline
    assert timeline.unit == "hour"
    assert timeline.labels == [f"2026-03-01 {h:02}:00" for h in (9, 10, 11, 12)]
    assert timeline.series["opens"] == [500, 0, 0, 200]
    assert timeline.series["human_opens"] == [200, 0, 0, 100]
    assert timeline.series["clicks"] == [0, 150, 0, 0]
    assert timeline.series["human_clicks"] == [0, 90, 0, 0]


def test_timeline_longer_than_two_weeks_is_per_day():
    campaign = sent_campaign()
    counters_add(
        campaign_id=campaign.pk,
        deltas={"opens@2026-03-01T09": 5, "opens@2026-03-01T23": 1, "opens@2026-03-20T00": 2,
                "clicks@2026-03-02T10": 1, "opens@garbage": 9},
    )  # fmt: skip
    timeline = campaign_report(campaign_id=campaign.pk).timeline
    assert timeline.unit == "day"
    assert len(timeline.labels) == 20
    assert (timeline.labels[0], timeline.labels[-1]) == ("2026-03-01", "2026-03-20")
    assert timeline.series["opens"][0] == 6
    assert timeline.series["opens"][-1] == 2
    assert timeline.series["clicks"][1] == 1
    assert sum(timeline.series["opens"]) == 8  # the malformed name is not drawn


def test_report_never_reads_the_ledger_or_the_events():
    campaign = campaign_with_opens_and_clicks()
    with CaptureQueriesContext(connection) as queries:
        campaign_report(campaign_id=campaign.pk)
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert len(queries.captured_queries) == 3
    assert "campaigns_notification" not in sql
    assert "tracking_event" not in sql


# -- recount ------------------------------------------------------------------------------------


def _campaign_with_rows() -> Campaign:
    """Ledger rows and events made by hand, one of each kind the report counts."""
    campaign = sent_campaign(recipients=7)
    link0, link1 = campaign.links.order_by("index")
    at = datetime(2026, 3, 1, 9, 15, tzinfo=UTC)
    row = functools.partial(NotificationFactory, campaign=campaign)
    delivered = row(status=N.DELIVERED, message_id="m-1")
    bounced = row(status=N.BOUNCED, message_id="m-2")
    soft = row(sent=True, message_id="m-3")
    render_failed = row(status=N.FAILED, message_id="m-4")  # sent, then SES could not render
    row(status=N.FAILED, reason="SES refused it")
    row(status=N.UNKNOWN)
    row(status=N.SKIPPED)
    event = functools.partial(EventFactory, occurred_at=at)
    hour_later = at + timedelta(hours=1)
    ses = {"source": Event.Source.SES}
    event(notification=delivered, delivered=True)
    event(notification=delivered, type=E.DEFERRED, **ses)
    event(notification=delivered, type=E.DEFERRED, source=Event.Source.SES_FILE,
          occurred_at=at + timedelta(minutes=5))  # fmt: skip
    event(notification=bounced, bounced=True)
    # Recorded before bounce types existed: the payload says which.
    event(notification=soft, type=E.BOUNCED, payload={"bounce": {"bounceType": "Transient"}}, **ses)
    event(notification=render_failed, type=E.RENDERING_FAILED, **ses)
    event(notification=delivered, opened=True, verdict="machine", verdict_reason="apple-mpp")
    event(notification=delivered, opened=True, occurred_at=hour_later, verdict="human")
    event(notification=delivered, opened=True, verdict="human",
          occurred_at=hour_later + timedelta(minutes=1))  # fmt: skip
    event(notification=soft, opened=True, occurred_at=hour_later)  # no verdict: "all" only
    event(notification=delivered, type=E.OPENED, **ses)  # SES's own open: our pixel counts opens
    event(notification=delivered, clicked=True, occurred_at=hour_later, link=link1, verdict="human")
    event(notification=delivered, clicked=True, occurred_at=hour_later, link=link1,
          verdict="machine")  # fmt: skip
    event(notification=soft, clicked=True, occurred_at=at + timedelta(hours=2), link=link0,
          verdict="machine")  # fmt: skip
    unsubscribed = {"type": E.UNSUBSCRIBED, "source": Event.Source.RECIPIENT}
    event(notification=delivered, **unsubscribed)
    event(notification=delivered, **unsubscribed)  # list, then all
    return campaign


def test_recount_counts_each_counter_from_the_rows():
    campaign = _campaign_with_rows()
    assert campaign_counters_recount(campaign_id=campaign.pk) == {
        "sent": 4, "failed": 1, "unknown": 1, "skipped": 1,
        "delivered": 1, "delayed": 1, "bounced_hard": 1, "bounced_soft": 1,  # messages, not events
        "rendering_failed": 1,
        "opens": 4, "unique_opens": 2, "human_opens": 2, "unique_human_opens": 1,
        "clicks": 3, "unique_clicks": 2, "human_clicks": 1, "unique_human_clicks": 1,
        "unsubscribed": 1,
        "link:0:clicks": 1, "link:0:unique_clicks": 1,
        "link:1:clicks": 2, "link:1:unique_clicks": 1, "link:1:human_clicks": 1,
        "opens@2026-03-01T09": 1, "opens@2026-03-01T10": 3, "human_opens@2026-03-01T10": 2,
        "clicks@2026-03-01T10": 2, "human_clicks@2026-03-01T10": 1, "clicks@2026-03-01T11": 1,
    }  # fmt: skip


def test_recount_command_rebuilds_checks_and_leaves_other_counters_alone(capsys):
    campaign = _campaign_with_rows()
    counters_add(campaign_id=campaign.pk, deltas={"sent": 3, "opens": 99, "something_else": 5})

    with pytest.raises(CommandError, match="drifted"):
        call_command("recount_campaign", campaign.pk, "--check")
    out = capsys.readouterr().out
    assert "sent: 3 -> 4" in out and "opens: 99 -> 4" in out
    assert campaign_counters(campaign_id=campaign.pk)["opens"] == 99  # --check wrote nothing

    call_command("recount_campaign", campaign.pk)
    counters = campaign_counters(campaign_id=campaign.pk)
    assert counters.pop("something_else") == 5  # not a name the report reads: left alone
    assert counters == campaign_counters_recount(campaign_id=campaign.pk)
    call_command("recount_campaign", campaign.pk, "--check")  # no drift now
    assert "all match" in capsys.readouterr().out
    report = campaign_report(campaign_id=campaign.pk)
    assert (report.sent, report.opens, report.unique_human_clicks) == (4, 4, 1)

    with pytest.raises(CommandError, match="no campaign"):
        call_command("recount_campaign", 999_999)


SES_MAIL = {"timestamp": "2026-03-01T09:00:00.000Z", "source": "news@example.com"}


def _ses_payload(event_type: str, message_id: str, recipient: str, **details) -> dict:
    mail = {**SES_MAIL, "messageId": message_id, "destination": [recipient]}
    when = {"timestamp": "2026-03-01T09:00:05.000Z"}
    body = {
        "Delivery": {"delivery": {**when, "recipients": [recipient], "smtpResponse": "250 ok"}},
        "Bounce": {"bounce": {**when, "bounceType": details.get("bounce_type", "Permanent"),
                              "bounceSubType": "General",
                              "bouncedRecipients": [{"emailAddress": recipient}]}},
        "Complaint": {"complaint": {**when, "complainedRecipients": [{"emailAddress": recipient}],
                                    "complaintFeedbackType": "abuse"}},
        "DeliveryDelay": {"deliveryDelay": {**when, "delayType": "MailboxFull",
                                            "delayedRecipients": [{"emailAddress": recipient}]}},
    }[event_type]  # fmt: skip
    return {"eventType": event_type, "mail": mail, **body}


def test_recount_equals_the_writers_counts_for_a_campaign_sent_for_real(
    client, eager_celery, ses, django_capture_on_commit_callbacks
):
    """Send through the real pipeline, open and click through our tracking URLs, feed SES
    events to the intake and unsubscribe: whatever the writers counted, the recount agrees."""
    from campaigns.services import campaign_send_now
    from campaigns.tokens import token_for
    from tracking.ses_events.parse import ses_events_parse
    from tracking.ses_events.record import ses_event_record
    from tracking.unsubscribe.services import contact_unsubscribe

    campaign = CampaignFactory(contact_list=list_with_contacts(6))
    with django_capture_on_commit_callbacks(execute=True):
        campaign_send_now(campaign=campaign)
    rows = list(Notification.objects.filter(campaign=campaign).select_related("contact"))
    assert len(rows) == 6 and all(row.message_id for row in rows)

    outcomes = ["Delivery", "Delivery", "Delivery", "Bounce", "Complaint", "DeliveryDelay"]
    for row, outcome in zip(rows, outcomes, strict=True):
        for event in ses_events_parse(
            payload=_ses_payload(outcome, row.message_id, row.contact.email)
        ):
            ses_event_record(event=event, source=Event.Source.SES)
    soft = _ses_payload(
        "Bounce", rows[5].message_id, rows[5].contact.email, bounce_type="Transient"
    )
    for event in ses_events_parse(payload=soft):
        ses_event_record(event=event, source=Event.Source.SES)

    person = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari"
    for row, agent in [(rows[0], person), (rows[0], person), (rows[1], "Mozilla/5.0"),
                       (rows[2], person)]:  # fmt: skip
        assert client.get(f"/t/o/{token_for(row.pk)}.gif", HTTP_USER_AGENT=agent).status_code == 200
    for row, index in [(rows[0], 0), (rows[0], 1), (rows[0], 1), (rows[2], 1)]:
        response = client.get(f"/t/c/{token_for(row.pk)}/{index}", HTTP_USER_AGENT=person)
        assert response.status_code == 302
    contact_unsubscribe(notification_id=rows[1].pk, scope="list", source=Event.Source.RECIPIENT)

    written = campaign_counters(campaign_id=campaign.pk)
    assert written.get("sent") == 6
    assert written.get("human_opens") and written.get("delivered") == 3  # every writer counted
    recounted = campaign_counters_recount(campaign_id=campaign.pk)
    assert {k: v for k, v in written.items() if v} == recounted
    call_command("recount_campaign", campaign.pk, "--check")

    # And for a campaign sent before counters existed: the recount fills them in.
    CampaignCounter.objects.filter(campaign=campaign).delete()
    call_command("recount_campaign", campaign.pk)
    assert campaign_counters(campaign_id=campaign.pk) == recounted


# -- CSV exports --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=HYPERLINK(\"http://evil\")", "'=HYPERLINK(\"http://evil\")"),
        ("+1+2", "'+1+2"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
        ("ada@example.com", "ada@example.com"), ("a=b", "a=b"), ("", ""),
        (None, ""), (42, "42"), (0.5, "0.5"), (-1, "'-1"),
    ],
)  # fmt: skip
def test_csv_cells_that_start_a_formula_are_quoted(value, written):
    assert csv_cell(value) == written


def _csv(response) -> list[list[str]]:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return list(csv.reader(io.StringIO(body.decode())))


def test_report_and_recipient_csv_exports_are_formula_safe(admin_client):
    campaign = sent_campaign(recipients=3)
    Campaign.objects.filter(pk=campaign.pk).update(name="=cmd|' /C calc'!A0")
    CampaignLink.objects.filter(campaign=campaign, index=1).update(url="=1+1")
    counters_add(campaign_id=campaign.pk, deltas=REPORT_COUNTERS)
    evil = Contact.objects.create(email="=2+5@example.com")
    NotificationFactory(campaign=campaign, contact=evil, sent=True, message_id="m-1")
    NotificationFactory(campaign=campaign, status=N.FAILED, reason="-ERR @ refused")

    response = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/report.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert "attachment" in response["Content-Disposition"]
    rows = _csv(response)
    assert rows[0] == ["Campaign", str(campaign.pk), "'=cmd|' /C calc'!A0"]
    by_label = {row[0]: row[1:] for row in rows if row}
    assert by_label["Sent (accepted by SES)"] == ["900", ""]
    assert by_label["Unique clicks"] == ["100", "50"]
    assert by_label["Click-through rate (unique clicks / delivered)"] == ["12.5", "6.2"]
    assert ["1", "'=1+1", "30", "25", "20"] in rows
    assert ["2026-03-01 10:00", "0", "150", "0", "90"] in rows

    response = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/recipients.csv")
    assert response.status_code == 200 and response.streaming
    rows = _csv(response)
    assert rows[0][:3] == ["Notification", "Email", "Status"]
    assert [row[1:4] for row in rows[1:]] == [
        ["'=2+5@example.com", "sent", ""],
        [Notification.objects.get(status=N.FAILED).contact.email, "failed", "'-ERR @ refused"],
    ]
    for row in rows:
        assert not any(cell[:1] in "=+-@\t\r" and cell for cell in row), row


# -- journeys -----------------------------------------------------------------------------------


def test_journey_lists_ledger_times_and_every_event_in_time_order():
    campaign = sent_campaign(recipients=1)
    contact = ContactFactory(email="ada@example.com")
    row = NotificationFactory(
        campaign=campaign, contact=contact, status=N.DELIVERED, message_id="m-1"
    )
    start = datetime(2020, 3, 1, 9, tzinfo=UTC)
    Notification.objects.filter(pk=row.pk).update(
        created_at=start, updated_at=start + timedelta(minutes=1)
    )
    link = campaign.links.get(index=1)
    EventFactory(
        notification=row,
        clicked=True,
        occurred_at=start + timedelta(hours=2),
        link=link,
        verdict="human",
        user_agent="Firefox",
    )
    EventFactory(
        notification=row,
        opened=True,
        occurred_at=start + timedelta(hours=1),
        verdict="machine",
        verdict_reason="apple-mpp",
    )
    EventFactory(notification=row, delivered=True, occurred_at=start + timedelta(seconds=30))
    EventFactory(
        notification=row,
        type=E.UNSUBSCRIBED,
        source=Event.Source.RECIPIENT,
        occurred_at=start + timedelta(hours=3),
        description="list 1 (one-click)",
    )

    journey = notification_journey(notification_id=row.pk)
    assert [(s.what, s.source) for s in journey.steps] == [
        ("queued", "ledger"),
        ("delivered", "ses"),
        ("status: Delivered", "ledger"),
        ("opened", "tracking"),
        ("clicked", "tracking"),
        ("unsubscribed", "recipient"),
    ]
    opened, clicked = journey.steps[3], journey.steps[4]
    assert (opened.verdict, opened.verdict_reason) == ("machine", "apple-mpp")
    assert clicked.detail == "link 1: https://example.com/1"
    assert "m-1" in journey.steps[2].detail
    assert journey.contact_email == "ada@example.com"

    later = NotificationFactory(campaign=sent_campaign(recipients=1), contact=contact)
    assert [j.notification_id for j in contact_journeys(contact_id=contact.pk)] == [
        later.pk, row.pk,
    ]  # fmt: skip
    assert [s.what for s in contact_journeys(contact_id=contact.pk)[0].steps] == ["queued"]


# -- admin pages --------------------------------------------------------------------------------


def test_campaign_page_shows_the_report_and_the_chart_data(admin_client):
    campaign = campaign_with_opens_and_clicks()
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert not any(
        "campaigns_notification" in q["sql"] or "tracking_event" in q["sql"]
        for q in queries.captured_queries
    )
    assert re.search(r"<th>Sent</th><td>900</td>", html)
    assert re.search(r"<th>Unique clicks</th><td>100</td><td>50</td>", html)
    assert re.search(
        r"<th>Click-through rate</th><td>12.5 %<span[^>]*> \(100 of 800 delivered\)</span></td>"
        r"<td>6.2 %<span[^>]*> \(50 of 800 delivered\)</span></td>",
        html,
    )
    assert "out of delivered messages" in html
    assert "https://example.com/1</td><td>30</td><td>25</td><td>20</td>" in html
    data = re.search(
        r'<script id="campaign-timeline" type="application/json">(.*?)</script>', html, re.S
    )
    timeline = json.loads(data.group(1))
    assert timeline["labels"][0] == "2026-03-01 09:00"
    assert timeline["opens"] == [500, 0, 0, 200]
    assert timeline["human_clicks"] == [0, 90, 0, 0]
    assert 'id="campaign-timeline-chart"' in html
    assert "vendor/chartjs/chart.umd.js" in html and "campaigns/report.js" in html
    # No inline script: every <script> loads a file or carries JSON data.
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert f"/admin/campaigns/campaign/{campaign.pk}/report.csv" in html

    progress = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/progress/").json()
    assert progress == {
        "status": "sent", "status_label": "Sent", "final": True, "recipients": 1000,
        "pending": 60, "sent": 900, "progress_percent": 90,
        "summary": "Finished: 900 of 1,000 sent, 95 not sent, 5 outcome unknown",
    }  # fmt: skip


def test_notification_list_searches_filters_and_never_counts_the_whole_ledger(
    admin_client, monkeypatch
):
    campaign = sent_campaign(recipients=5)
    ada = ContactFactory(email="ada@example.com")
    NotificationFactory(campaign=campaign, contact=ada, sent=True, message_id="m-ada")
    NotificationFactory.create_batch(4, campaign=campaign)
    url = "/admin/campaigns/notification/"

    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(url, {"q": " ADA@example.com "}).content.decode()
    assert "ada@example.com" in html and "person" not in html
    assert "Show counts" not in html  # facets would count every filter choice
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql for sql in counts), counts

    html = admin_client.get(url, {"q": "m-ada"}).content.decode()
    assert "ada@example.com" in html
    created = {"campaign__id__exact": campaign.pk, "status__exact": "created"}
    filtered = admin_client.get(url, created)
    assert filtered.status_code == 200 and "ada@example.com" not in filtered.content.decode()
    assert "4 messages" in filtered.content.decode()

    monkeypatch.setattr(CappedCountPaginator, "CAP", 3)
    assert "3+ messages" in admin_client.get(url).content.decode()
    ada_row = Notification.objects.get(contact=ada)
    assert admin_client.get(f"{url}{ada_row.pk}/delete/").status_code == 403  # the ledger stays


def test_notification_and_contact_pages_show_journeys(admin_client):
    campaign = sent_campaign(recipients=1)
    contact = ContactFactory(email="grace@example.com")
    row = NotificationFactory(campaign=campaign, contact=contact, sent=True, message_id="m-g")
    EventFactory(
        notification=row,
        opened=True,
        occurred_at=datetime(2026, 3, 1, 10, tzinfo=UTC),
        verdict="machine",
        verdict_reason="apple-mpp",
    )

    html = admin_client.get(f"/admin/campaigns/notification/{row.pk}/change/").content.decode()
    assert f'id="journey-{row.pk}"' in html
    assert "apple-mpp" in html and "status: Sent" in html and "grace@example.com" in html

    html = admin_client.get(f"/admin/campaigns/contact/{contact.pk}/change/").content.decode()
    assert "Where did the emails to this contact go?" in html
    assert f'id="journey-{row.pk}"' in html and campaign.name in html


@pytest.fixture
def staff_client(client):
    user = User.objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(user)
    client.user = user
    return client


def test_report_pages_are_refused_without_permission(staff_client):
    campaign = sent_campaign(recipients=1)
    contact = ContactFactory()
    row = NotificationFactory(campaign=campaign, contact=contact)
    urls = [
        f"/admin/campaigns/campaign/{campaign.pk}/change/",
        f"/admin/campaigns/campaign/{campaign.pk}/report.csv",
        f"/admin/campaigns/campaign/{campaign.pk}/recipients.csv",
        f"/admin/campaigns/notification/{row.pk}/change/",
        f"/admin/campaigns/contact/{contact.pk}/change/",
    ]
    for url in urls:
        assert staff_client.get(url).status_code == 403, url

    # Viewing the campaign is what the report needs; the recipients (addresses) need viewing
    # contacts too.
    staff_client.user.user_permissions.add(Permission.objects.get(codename="view_campaign"))
    for url in urls[:2]:
        assert staff_client.get(url).status_code == 200, url
    assert staff_client.get(urls[2]).status_code == 403
    staff_client.user.user_permissions.add(Permission.objects.get(codename="view_contact"))
    assert staff_client.get(urls[2]).status_code == 200


# -- the chart in a real browser ------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_timeline_chart_draws_in_a_browser(page, live_server, tmp_path):  # noqa: F811
    campaign = campaign_with_opens_and_clicks()
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    page.wait_for_selector("#campaign-timeline-chart[data-points='4']")
    box = page.locator("#campaign-timeline-chart").bounding_box()
    assert box["width"] > 300 and box["height"] > 200
    page.locator("#campaign-report").screenshot(path=str(tmp_path / "report.png"))
