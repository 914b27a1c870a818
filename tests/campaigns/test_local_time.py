"""Send at this local time in each contact's time zone: the waves (campaigns.waves) and the
engine that freezes each one when due (campaigns.services, the sweeper), on PostgreSQL, the
local SES endpoint and (eager) Celery.

The clock. Nothing here sleeps: "the clock moves on" by moving the campaign's whole schedule
(its wall-clock time, scheduled_at, next_wave_at) back by the same amount, which is what the
code sees when time passes. The zones used by these engine tests have no DST (Asia/Tokyo,
Asia/Kolkata, America/Bogota), so moving the wall-clock time moves every moment equally.
"""

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns import services, sweeper, waves
from campaigns.admin.local_time import campaign_wave_rows
from campaigns.contact_fields import contact_time_zone_check
from campaigns.imports import IMPORT_FIELDS
from campaigns.models import Campaign, Contact, Membership, Notification
from campaigns.preferences import user_preferences_update
from tests.factories import CampaignFactory, ContactFactory, ContactListFactory

pytestmark = pytest.mark.django_db

N = Notification.Status
C = Campaign.Status


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- the waves, pure ----------------------------------------------------------------------------


def test_each_zone_gets_the_wall_time_in_its_own_offset_and_equal_moments_share_a_wave():
    plan = waves.waves_plan(
        wall=datetime(2030, 1, 15, 9, 0),
        fallback_zone="Europe/Berlin",
        zone_counts={"Asia/Tokyo": 3, "Europe/Paris": 2, "": 4, "America/New_York": 1},
    )
    assert [(w.moment, w.zones, w.recipients) for w in plan] == [
        (utc(2030, 1, 15, 0, 0), ("Asia/Tokyo",), 3),
        # No zone: the user's (Berlin), which reaches 09:00 with Paris: one wave.
        (utc(2030, 1, 15, 8, 0), ("Europe/Berlin", "Europe/Paris"), 6),
        (utc(2030, 1, 15, 14, 0), ("America/New_York",), 1),
    ]


def test_a_stale_zone_name_is_sent_in_the_fallback_zone():
    plan = waves.waves_plan(
        wall=datetime(2030, 1, 15, 9, 0),
        fallback_zone="Asia/Tokyo",
        zone_counts={"Mars/Olympus_Mons": 2, "Asia/Tokyo": 1},
    )
    assert [(w.moment, w.zones, w.recipients) for w in plan] == [
        (utc(2030, 1, 15, 0, 0), ("Asia/Tokyo",), 3)
    ]


def test_dst_edges():
    # Between the US change (2030-03-10) and Europe's (2030-03-31), New York is 4 h behind
    # London, not 5.
    plan = waves.waves_plan(
        wall=datetime(2030, 3, 20, 9, 0),
        fallback_zone="UTC",
        zone_counts={"Europe/London": 1, "America/New_York": 1},
    )
    assert [w.moment for w in plan] == [utc(2030, 3, 20, 9), utc(2030, 3, 20, 13)]
    # 02:30 on 2030-03-31 does not exist in Paris (02:00 → 03:00): read with the offset before
    # the jump (+01:00), so it goes out at 01:30 UTC, 03:30 on Paris's clocks.
    assert waves.zone_moment(datetime(2030, 3, 31, 2, 30), "Europe/Paris") == utc(
        2030, 3, 31, 1, 30
    )
    # 02:30 on 2030-10-27 happens twice in Paris (03:00 → 02:00): the first one (+02:00).
    assert waves.zone_moment(datetime(2030, 10, 27, 2, 30), "Europe/Paris") == utc(
        2030, 10, 27, 0, 30
    )
    # The day after each change, the new offset.
    assert waves.zone_moment(datetime(2030, 4, 1, 9), "Europe/Paris") == utc(2030, 4, 1, 7)
    assert waves.zone_moment(datetime(2030, 10, 28, 9), "Europe/Paris") == utc(2030, 10, 28, 8)


def test_contact_time_zone_rule_and_import_fields():
    assert contact_time_zone_check(" Europe/Paris ") == "Europe/Paris"
    assert contact_time_zone_check("") == ""
    for bad in ("Paris", "Europe/\nParis", "<b>x</b>", "x" * 10_000):
        with pytest.raises(ValidationError, match="not a time zone name"):
            contact_time_zone_check(bad)
    assert "time_zone" in IMPORT_FIELDS


# -- the engine ---------------------------------------------------------------------------------

ZONES = {"Asia/Tokyo": 3, "Asia/Kolkata": 2, "America/Bogota": 2, "": 1}


def make_local_campaign(zones=ZONES) -> Campaign:
    """A campaign to contacts in these zones ("" = not known), plus one who is unsubscribed and
    one who left the list (neither is ever frozen)."""
    contact_list = ContactListFactory()
    contacts = [ContactFactory(time_zone=zone) for zone, n in zones.items() for _ in range(n)]
    gone = ContactFactory(time_zone="Asia/Tokyo", status=Contact.Status.UNSUBSCRIBED)
    left = ContactFactory(time_zone="Asia/Tokyo")
    Membership.objects.bulk_create(
        [Membership(contact_list=contact_list, contact=c) for c in [*contacts, gone, left]]
    )
    Membership.objects.filter(contact=left).update(unsubscribed_at=timezone.now())
    return CampaignFactory(contact_list=contact_list)


def wall_tomorrow() -> datetime:
    day = timezone.now().astimezone(UTC).date() + timedelta(days=2)
    return datetime(day.year, day.month, day.day, 9, 0)


def schedule(campaign: Campaign, fallback_zone: str = "Asia/Kolkata") -> list[waves.Wave]:
    # Contacts without a zone: the scheduling user's, Kolkata here (its own wave, 03:30 UTC).
    services.campaign_schedule_local(
        campaign=campaign, wall=wall_tomorrow(), fallback_zone=fallback_zone
    )
    campaign.refresh_from_db()
    _FIRST_WALL[campaign.pk] = waves.wall_time_parse(campaign.local_send_time)
    return waves.campaign_waves(campaign=campaign)


_FIRST_WALL: dict[int, datetime] = {}


def clock_moves_to(campaign: Campaign, moment: datetime) -> None:
    """As if it were now `moment` (up to a minute later), a moment of the schedule as first
    made: the campaign's schedule moves back by the time passed since then (less what it has
    already moved), in whole minutes as the wall-clock time is stored."""
    campaign.refresh_from_db()
    already = moved(campaign)
    shift = timedelta(minutes=math.ceil((moment - timezone.now() - already) / timedelta(minutes=1)))
    Campaign.objects.filter(pk=campaign.pk).update(
        local_send_time=waves.wall_time_text(
            waves.wall_time_parse(campaign.local_send_time) - shift
        ),
        scheduled_at=campaign.scheduled_at - shift,
        next_wave_at=campaign.next_wave_at and campaign.next_wave_at - shift,
    )
    campaign.refresh_from_db()


def moved(campaign: Campaign) -> timedelta:
    """How far clock_moves_to has moved the campaign's schedule back (add to compare with the
    schedule as first made)."""
    return _FIRST_WALL[campaign.pk] - waves.wall_time_parse(campaign.local_send_time)


def states(campaign: Campaign) -> list[str]:
    """The waves' states as the campaign page shows them."""
    return [row.state for row in campaign_wave_rows(campaign=campaign)]


def frozen_zones(campaign: Campaign) -> Counter:
    rows = Notification.objects.filter(campaign=campaign)
    return Counter(rows.values_list("contact__time_zone", flat=True))


def accepted(ses, campaign: Campaign) -> Counter:
    messages = ses.messages(limit=10_000, header=f"X-Campaign:{campaign.pk}", bodies=0)
    return Counter(address for m in messages for address in m["recipients"])


def first_wave_started(capture_on_commit) -> tuple[Campaign, list[waves.Wave]]:
    """make_local_campaign, scheduled (schedule) and started by beat: its first wave (Tokyo,
    3 recipients) frozen and sent."""
    campaign = make_local_campaign()
    plan = schedule(campaign)
    clock_moves_to(campaign, plan[0].moment)
    with capture_on_commit(execute=True):
        services.campaigns_start_due()
    return campaign, plan


def assert_sent_to_everyone_once(ses, campaign: Campaign) -> None:
    """Sent, and SES accepted it once for each of make_local_campaign's 8 recipients."""
    campaign.refresh_from_db()
    assert campaign.status == C.SENT
    assert set(accepted(ses, campaign).values()) == {1}
    assert len(accepted(ses, campaign)) == 8


def test_scheduling_refuses_a_time_already_past_in_some_zone_and_unschedule_forgets_it(ses):
    campaign = make_local_campaign()
    day = timezone.now().astimezone(UTC).date()
    # Today at 00:01 has passed in Tokyo (UTC+9) whatever the time now.
    with pytest.raises(services.CampaignError, match="already passed in Asia/Tokyo"):
        services.campaign_schedule_local(
            campaign=campaign,
            wall=datetime(day.year, day.month, day.day, 0, 1),
            fallback_zone="UTC",
        )
    campaign.refresh_from_db()
    assert (campaign.status, campaign.local_send_time) == (C.DRAFT, "")

    plan = schedule(campaign)
    assert campaign.status == C.SCHEDULED
    assert campaign.scheduled_at == plan[0].moment  # the first wave starts the campaign
    assert [(w.zones, w.recipients) for w in plan] == [
        (("Asia/Tokyo",), 3),
        (("Asia/Kolkata",), 3),
        (("America/Bogota",), 2),
    ]
    services.campaign_unschedule(campaign=campaign)
    campaign.refresh_from_db()
    assert (campaign.local_send_time, campaign.local_fallback_zone) == ("", "")


def test_each_wave_starts_only_when_due_and_everyone_gets_it_once(
    ses, eager_celery, django_capture_on_commit_callbacks
):
    campaign = make_local_campaign()
    plan = schedule(campaign)

    def beat():  # beat's two periodic tasks, run now (eager: their work runs inline)
        with django_capture_on_commit_callbacks(execute=True):
            started = services.campaigns_start_due()
            waved = services.campaign_waves_start_due()
        campaign.refresh_from_db()
        return started, waved

    assert beat() == ([], [])
    clock_moves_to(campaign, plan[0].moment - timedelta(minutes=2))
    assert beat() == ([], [])
    assert campaign.status == C.SCHEDULED

    clock_moves_to(campaign, plan[0].moment)
    assert beat() == ([campaign.pk], [])
    assert campaign.status == C.SENDING
    assert frozen_zones(campaign) == {"Asia/Tokyo": 3}
    assert campaign.next_wave_at + moved(campaign) == plan[1].moment
    assert campaign.frozen_at is None
    assert campaign.recipient_count == 8  # frozen + waiting: the report counts them pending
    assert states(campaign) == ["started", "next", "waiting"]
    assert set(accepted(ses, campaign).values()) == {1} and len(accepted(ses, campaign)) == 3
    assert not services.campaign_finish_if_done(campaign_id=campaign.pk)  # waves wait

    # Waiting is not a stalled freeze, however long nothing changes.
    Campaign.objects.filter(pk=campaign.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        sweeper.campaigns_sweep()
    assert enqueued == []

    clock_moves_to(campaign, plan[1].moment)
    assert beat() == ([], [campaign.pk])
    assert frozen_zones(campaign) == {"Asia/Tokyo": 3, "Asia/Kolkata": 2, "": 1}
    assert campaign.next_wave_at + moved(campaign) == plan[2].moment
    assert states(campaign) == ["started", "started", "next"]
    assert campaign.status == C.SENDING

    clock_moves_to(campaign, plan[2].moment)
    assert beat() == ([], [campaign.pk])
    assert campaign.frozen_at is not None
    assert campaign.next_wave_at is None
    assert campaign.status == C.SENT
    assert campaign.recipient_count == 8
    emails = set(
        Contact.objects.filter(
            status=Contact.Status.ACTIVE,
            membership__contact_list=campaign.contact_list,
            membership__unsubscribed_at=None,
        ).values_list("email", flat=True)
    )
    assert accepted(ses, campaign) == Counter(dict.fromkeys(emails, 1))


def test_a_freeze_lost_between_waves_is_redone_by_the_sweeper_and_sends_nobody_twice(
    ses, eager_celery, django_capture_on_commit_callbacks
):
    campaign, plan = first_wave_started(django_capture_on_commit_callbacks)

    # Beat takes the second wave, and the worker dies before its freeze runs: the task is lost.
    clock_moves_to(campaign, plan[1].moment)
    with django_capture_on_commit_callbacks(execute=False) as lost:
        assert services.campaign_waves_start_due() == [campaign.pk]
    assert len(lost) == 1
    # A second beat (or a beat restarted) does not take the same wave again.
    with django_capture_on_commit_callbacks(execute=False) as again:
        assert services.campaign_waves_start_due() == []
    assert again == []

    # Nothing changed for CREATED_GRACE: the sweeper sees a stalled freeze and finishes it.
    Campaign.objects.filter(pk=campaign.pk).update(
        updated_at=timezone.now() - sweeper.CREATED_GRACE - timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        sweeper.campaigns_sweep()
    assert frozen_zones(campaign) == {"Asia/Tokyo": 3, "Asia/Kolkata": 2, "": 1}

    # A freeze that runs twice (the lost task delivered after all; a crash mid-freeze redone)
    # adds nobody: the ledger's unique (campaign, contact).
    with django_capture_on_commit_callbacks(execute=True):
        services.campaign_freeze(campaign_id=campaign.pk)
        services.campaign_freeze(campaign_id=campaign.pk)
    assert Notification.objects.filter(campaign=campaign).count() == 6

    clock_moves_to(campaign, plan[2].moment)
    with django_capture_on_commit_callbacks(execute=True):
        services.campaign_waves_start_due()
        services.campaign_freeze(campaign_id=campaign.pk)  # and once more, late
    assert_sent_to_everyone_once(ses, campaign)
    assert Notification.objects.filter(campaign=campaign).count() == 8


def test_a_contact_who_moves_to_a_passed_zone_goes_with_the_next_wave(
    ses, eager_celery, django_capture_on_commit_callbacks
):
    campaign, plan = first_wave_started(django_capture_on_commit_callbacks)
    # A Bogota contact moves to Tokyo, whose wave has gone; and a Tokyo one to Bogota (frozen
    # already: it is not sent again).
    mover = Contact.objects.filter(time_zone="America/Bogota").first()
    Contact.objects.filter(pk=mover.pk).update(time_zone="Asia/Tokyo")
    tokyo = Notification.objects.filter(campaign=campaign).first().contact
    Contact.objects.filter(pk=tokyo.pk).update(time_zone="America/Bogota")

    clock_moves_to(campaign, plan[1].moment)
    with django_capture_on_commit_callbacks(execute=True):
        services.campaign_waves_start_due()
    assert Notification.objects.filter(campaign=campaign, contact=mover).exists()
    clock_moves_to(campaign, plan[2].moment)
    with django_capture_on_commit_callbacks(execute=True):
        services.campaign_waves_start_due()
    assert_sent_to_everyone_once(ses, campaign)


def test_pause_before_a_wave_holds_it_until_resume(
    ses, eager_celery, django_capture_on_commit_callbacks
):
    campaign, plan = first_wave_started(django_capture_on_commit_callbacks)
    services.campaign_pause(campaign=campaign)

    clock_moves_to(campaign, plan[1].moment)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.campaign_waves_start_due() == [campaign.pk]
    # Frozen (so it is not forgotten) but not sent while paused.
    assert frozen_zones(campaign)["Asia/Kolkata"] == 2
    assert len(accepted(ses, campaign)) == 3

    with django_capture_on_commit_callbacks(execute=True):
        services.campaign_resume(campaign=campaign)
    assert len(accepted(ses, campaign)) == 6
    clock_moves_to(campaign, plan[2].moment)
    with django_capture_on_commit_callbacks(execute=True):
        services.campaign_waves_start_due()
    assert_sent_to_everyone_once(ses, campaign)


def test_cancel_before_a_wave_sends_no_later_wave(
    ses, eager_celery, django_capture_on_commit_callbacks
):
    campaign, plan = first_wave_started(django_capture_on_commit_callbacks)
    services.campaign_cancel(campaign=campaign)

    clock_moves_to(campaign, plan[2].moment)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.campaign_waves_start_due() == []
        assert services.campaign_freeze(campaign_id=campaign.pk) == 0  # a stray freeze too
        sweeper.campaigns_sweep()
    campaign.refresh_from_db()
    assert campaign.status == C.CANCELLED
    assert frozen_zones(campaign) == {"Asia/Tokyo": 3}
    assert len(accepted(ses, campaign)) == 3


def test_cancel_while_scheduled_sends_nothing(
    ses, eager_celery, django_capture_on_commit_callbacks
):
    campaign = make_local_campaign()
    plan = schedule(campaign)
    services.campaign_cancel(campaign=campaign)
    clock_moves_to(campaign, plan[2].moment)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.campaigns_start_due() == []
        assert services.campaign_waves_start_due() == []
    assert not Notification.objects.filter(campaign=campaign).exists()


def test_the_contact_form_refuses_an_unknown_time_zone_with_the_reason(admin_client):
    contact = ContactFactory(time_zone="Asia/Tokyo")
    url = f"/admin/campaigns/contact/{contact.pk}/change/"
    data = {
        "email": contact.email, "first_name": "A", "last_name": "B", "attributes": "{}",
        "status": "active", "time_zone": "Europe/<b>Atlantis</b>",
    }  # fmt: skip
    response = admin_client.post(url, data)
    assert response.status_code == 200  # the form again, with the reason
    assert "is not a time zone name such as Europe/Paris" in response.content.decode()
    assert "<b>Atlantis" not in response.content.decode()
    contact.refresh_from_db()
    assert contact.time_zone == "Asia/Tokyo"
    response = admin_client.post(url, {**data, "time_zone": "Europe/Paris"})
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.time_zone == "Europe/Paris"


def test_the_schedule_form_and_its_review_schedule_the_waves(admin_client, admin_user):
    """The option goes from the schedule form through the review to its confirmation, with
    the wall time as typed in the chosen zone."""
    user_preferences_update(user=admin_user, time_zone="Europe/Paris")
    contact_list = ContactListFactory()
    for zone in ("Asia/Tokyo", "", "America/New_York"):
        Membership.objects.create(contact_list=contact_list, contact=ContactFactory(time_zone=zone))
    campaign = CampaignFactory(contact_list=contact_list)
    base = f"/admin/campaigns/campaign/{campaign.pk}"
    form = {"send_at": "2031-01-15T09:00", "time_zone": "Europe/Paris", "local_time": "on"}

    review = admin_client.post(f"{base}/schedule/", form, follow=True)
    page = review.content.decode()
    assert "Schedule for 3 recipients at 2031-01-15 09:00 in each contact" in page
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.DRAFT

    confirm = {"send_at": "2031-01-15T09:00:00+01:00", "recipients": "3", "local_time": "1"}
    admin_client.post(f"{base}/review/", confirm)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.local_send_time == waves.wall_time_text(datetime(2031, 1, 15, 9))
    assert campaign.local_fallback_zone == "Europe/Paris"
    assert campaign.scheduled_at == datetime(2031, 1, 15, 0, tzinfo=UTC)  # 09:00 in Tokyo
