"""The campaign page's honest numbers: the progress it polls, the status as a marketer reads
it, rates that never pass 100 % and say what they are out of, the timeline in the reader's
time zone, and what a cancelled campaign says happened."""

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns import services
from campaigns.counters import CounterName, counters_add
from campaigns.models import Campaign, Notification
from campaigns.preferences import user_preferences_update
from tests.factories import CampaignFactory, list_with_contacts
from tests.progress_helpers import accept, sending_campaign
from tracking.reports.report import campaign_report

pytestmark = pytest.mark.django_db

C = Campaign.Status
N = Notification.Status


def _progress(client, campaign: Campaign) -> dict:
    return client.get(f"/admin/campaigns/campaign/{campaign.pk}/progress/").json()


# -- progress -----------------------------------------------------------------------------------


def test_progress_counts_each_accepted_row_at_once_below_a_batch_and_while_paused(admin_client):
    campaign, ids = sending_campaign(30)  # well below one batch (500)
    accept(campaign, ids[:7])
    progress = _progress(admin_client, campaign)
    assert (progress["sent"], progress["progress_percent"], progress["final"]) == (7, 23, False)
    assert progress["summary"] == "Sending: 7 of 30 sent so far, 23 waiting"

    services.campaign_pause(campaign=campaign)
    accept(campaign, ids[7:20])  # rows claimed before the pause still finish
    progress = _progress(admin_client, campaign)
    assert (progress["status"], progress["status_label"]) == ("paused", "Paused")
    assert (progress["sent"], progress["progress_percent"], progress["final"]) == (20, 66, False)
    assert progress["summary"] == "Paused: 20 of 30 sent so far, 10 waiting"


def test_the_bar_reaches_100_only_when_every_recipient_was_accepted():
    campaign, ids = sending_campaign(1000)
    accept(campaign, ids[:999])
    assert campaign_report(campaign_id=campaign.pk).progress_percent == 99
    accept(campaign, ids[999:])
    assert campaign_report(campaign_id=campaign.pk).progress_percent == 100


def test_a_cancelled_campaign_says_how_many_were_sent_and_not_sent(admin_client):
    campaign, ids = sending_campaign(10)
    accept(campaign, ids[:4])
    services.campaign_cancel(campaign=campaign)

    report = campaign_report(campaign_id=campaign.pk)
    assert (report.sent, report.skipped, report.progress_percent) == (4, 6, 40)
    assert report.summary == "Cancelled: 4 of 10 sent, 6 not sent"
    assert report.final
    html = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "Cancelled: 4 of 10 sent, 6 not sent" in html
    assert "processed" not in html
    assert "data-final" in html  # the page does not poll a campaign that cannot change


def test_a_failed_campaign_with_unknown_outcomes_keeps_them_apart():
    campaign, ids = sending_campaign(1000)
    accept(campaign, ids[:400])
    counters_add(campaign_id=campaign.pk, deltas={CounterName.UNKNOWN: 3})
    services.campaign_fail_sending(campaign_id=campaign.pk, reason="template broke")
    report = campaign_report(campaign_id=campaign.pk)
    assert report.summary == "Failed: 400 of 1,000 sent, 597 not sent, 3 outcome unknown"


# -- status labels ------------------------------------------------------------------------------


def test_send_now_reads_starting_not_scheduled(admin_client):
    campaign = CampaignFactory(contact_list=list_with_contacts(3))
    services.campaign_send_now(campaign=campaign)  # its start task waits for the commit
    campaign.refresh_from_db()
    assert campaign.status == C.SCHEDULED  # the state machine is unchanged…

    assert campaign_report(campaign_id=campaign.pk).status_label == "Starting"  # …its name is
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert 'data-field="status">Starting</strong>' in page
    assert _progress(admin_client, campaign)["status_label"] == "Starting"
    listing = admin_client.get("/admin/campaigns/campaign/").content.decode()
    assert '<td class="field-status_label">Starting</td>' in listing


def test_a_campaign_scheduled_for_later_reads_scheduled(admin_client):
    campaign = CampaignFactory(contact_list=list_with_contacts(1))
    services.campaign_schedule(campaign=campaign, send_at=timezone.now() + timedelta(days=1))
    assert campaign_report(campaign_id=campaign.pk).status_label == "Scheduled"
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert 'data-field="status">Scheduled</strong>' in page and "sends at" in page


def test_notification_statuses_read_as_a_marketer_would_and_keep_their_values(admin_client):
    campaign, ids = sending_campaign(2)
    Notification.objects.filter(pk=ids[0]).update(status=N.COMPLAINED)
    Notification.objects.filter(pk=ids[1]).update(status=N.SKIPPED)
    listing = admin_client.get("/admin/campaigns/notification/").content.decode()
    assert "Marked as spam" in listing and "Skipped (unsubscribed or suppressed)" in listing
    assert set(Notification.objects.values_list("status", flat=True)) == {"complained", "skipped"}
    assert {label for _, label in N.choices} >= {
        "Waiting", "Handing to SES", "Sent", "Delivered", "Bounced", "Marked as spam",
        "Refused by SES", "Failed", "Outcome unknown", "Skipped (unsubscribed or suppressed)",
    }  # fmt: skip
    journey = admin_client.get(f"/admin/campaigns/notification/{ids[0]}/change/").content
    assert b"now <strong>Marked as spam</strong>" in journey


# -- rates --------------------------------------------------------------------------------------


def _report(**counters):
    campaign = CampaignFactory(status=C.SENT, recipient_count=counters.get("sent", 0))
    counters_add(campaign_id=campaign.pk, deltas=counters)
    return campaign_report(campaign_id=campaign.pk)


def test_clickers_who_never_opened_count_as_openers_so_click_to_open_stays_at_most_100():
    # Images off: 3 recipients clicked, our pixel saw only 2 opens (the 150 %).
    report = _report(sent=100, delivered=100, unique_opens=2, unique_clicks=3)
    assert report.click_to_open_rate.value == 1.0
    assert str(report.click_to_open_rate) == "100.0 %"
    assert report.click_to_open_rate.detail == "3 of 3 openers"


def test_click_to_open_is_human_clickers_over_human_openers_leaving_bots_out():
    # A link scanner clicked every message; people opened 40 and 10 of them clicked.
    report = _report(
        sent=100, delivered=100, unique_opens=90, unique_clicks=100,
        unique_human_opens=40, unique_human_clicks=10,
    )  # fmt: skip
    assert report.human_click_to_open_rate.value == pytest.approx(10 / 40)
    assert report.human_click_to_open_rate.detail == "10 of 40 openers"
    assert report.click_to_open_rate.value == 1.0  # all of it: the scanner's clicks


def test_no_opens_and_no_clicks_give_no_rate_rather_than_zero_or_an_error():
    report = _report(sent=10)
    assert report.click_to_open_rate.value is None and str(report.click_to_open_rate) == "—"
    assert report.open_rate.detail == "0 of 10 sent"


def test_no_rate_passes_100_when_delivery_events_lag_behind_opens():
    report = _report(sent=1000, delivered=50, unique_opens=300, unique_clicks=80)
    for rate in (report.open_rate, report.click_through_rate, report.click_to_open_rate):
        assert 0 <= rate.value <= 1, rate
    assert report.open_rate.detail == "50 of 50 delivered"
    assert report.click_through_rate.detail == "50 of 50 delivered"


def test_every_rate_on_the_page_shows_what_it_is_out_of(admin_client):
    report = _report(sent=200, delivered=100, unique_opens=40, unique_clicks=10, bounced_hard=4)
    html = admin_client.get(
        f"/admin/campaigns/campaign/{report.campaign_id}/change/"
    ).content.decode()
    for basis in ("(40 of 100 delivered)", "(10 of 40 openers)", "(4 of 200 sent)"):
        assert basis in html


# -- the timeline -------------------------------------------------------------------------------


def test_timeline_hours_are_labelled_in_the_readers_time_zone(admin_client, admin_user):
    report = _report(sent=10, **{"opens@2026-03-01T09": 3, "opens@2026-03-01T10": 1})
    user_preferences_update(user=admin_user, time_zone="Asia/Kolkata")  # UTC+5:30
    html = admin_client.get(
        f"/admin/campaigns/campaign/{report.campaign_id}/change/"
    ).content.decode()
    assert '"labels": ["2026-03-01 14:30", "2026-03-01 15:30"]' in html
    assert "time zone Asia/Kolkata" in html
    assert campaign_report(campaign_id=report.campaign_id).timeline.labels[0] == "2026-03-01 09:00"
