"""The open pixel and click redirect: signed tokens, server-side destinations, no open redirect;
verdicts (human / machine) on what each request shows, and the counters they add to; the Redis
buffer and its flusher (nothing lost, nothing counted twice)."""

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test import Client, RequestFactory
from django.utils import timezone

from campaigns.counters import campaign_counters
from campaigns.models import Notification
from campaigns.tokens import notification_id_from, token_for, unsubscribe_token_for
from infra import queue, wsgi_direct
from tests.conftest import call_wsgi, redis_buffer
from tests.factories import (
    CampaignFactory,
    CampaignLinkFactory,
    EventFactory,
    NotificationFactory,
)
from tracking.hits import buffer as hits_buffer
from tracking.hits import lookups, repeats
from tracking.hits.buffer import (
    DEAD_LETTERS,
    buffer_oldest_wait,
    tracking_buffer_flush,
    tracking_flush_if_late,
)
from tracking.hits.classify import CLICK, OPEN
from tracking.hits.lookups import campaign_links, notification_campaign
from tracking.hits.record import Hit, hit_new, tracking_hits_record
from tracking.hits.views import tracking_wsgi
from tracking.models import Event, FirstEngagement
from tracking.reports.report import campaign_report

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
HOME = "81.2.69.160"


def make_notification(links=("https://example.com/a", "javascript:alert(1)"), sent_ago=3600):
    """A notification sent `sent_ago` seconds ago, of a campaign with `links`."""
    campaign = CampaignFactory()
    for index, url in enumerate(links):
        CampaignLinkFactory(campaign=campaign, index=index, url=url)
    notification = NotificationFactory(campaign=campaign, sent=True, message_id="m-1")
    # The send is the ledger's last change of a `sent` row (no SES event yet).
    Notification.objects.filter(pk=notification.pk).update(
        updated_at=timezone.now() - timedelta(seconds=sent_ago)
    )
    return notification


@pytest.fixture
def notification():
    return make_notification()


def counters(notification, *names):
    """The campaign's counters, zeros left out, hourly series summed as `<series>@*`; only
    `names` if given (a name ending in * is a prefix)."""
    out = {}
    for name, value in campaign_counters(campaign_id=notification.campaign_id).items():
        name = name.split("@")[0] + "@*" if "@" in name else name
        wanted = not names or any(
            name.startswith(n[:-1]) if n.endswith("*") else name == n for n in names
        )
        if value and wanted:
            out[name] = out.get(name, 0) + value
    return out


def get(client, path, *, ua=BROWSER, ip=HOME, method="get"):
    return getattr(client, method)(path, HTTP_USER_AGENT=ua, REMOTE_ADDR=ip)


def open_path(notification):
    return f"/t/o/{token_for(notification.pk)}.gif"


def click_path(notification, index):
    return f"/t/c/{token_for(notification.pk)}/{index}"


def verdicts(notification):
    return list(
        Event.objects.filter(notification=notification)
        .order_by("id")
        .values_list("type", "verdict", "verdict_reason")
    )


# --- tokens and the views ---------------------------------------------------------------------


def test_token_round_trip_and_tampering():
    token = token_for(123456789)
    assert notification_id_from(token) == 123456789
    head, _, signature = token.partition(".")
    assert notification_id_from(f"{head}.{signature[:-1]}x") is None
    assert notification_id_from(f"{int(head, 36) + 1:x}.{signature}") is None
    assert notification_id_from(token_for(2).split(".")[0] + "." + signature) is None
    for junk in ["", ".", "abc", "zzzzzzzzzzzzzzzzzz.abc", "%%%.x"]:
        assert notification_id_from(junk) is None


def test_pixel_records_an_open(client, notification):
    response = get(client, open_path(notification), ua="Mail/1.0")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert "no-cache" in response["Cache-Control"]
    assert "no-store" in response["Cache-Control"]
    event = Event.objects.get()
    assert (event.type, event.source, event.notification_id) == (
        "opened",
        "tracking",
        notification.pk,
    )
    assert (event.user_agent, event.ip) == ("Mail/1.0", HOME)
    assert (event.verdict, event.verdict_reason) == ("human", "default")
    assert event.esp_event_id.startswith("trk:")
    assert campaign_report(campaign_id=notification.campaign_id).unique_opens == 1


def test_pixel_for_unknown_or_forged_token_returns_pixel_and_records_nothing(client, notification):
    head, _, signature = token_for(notification.pk).partition(".")
    for token in [token_for(notification.pk + 1000), "forged.token", "x", f"{head}.{signature}x"]:
        response = get(client, f"/t/o/{token}.gif")
        assert response.status_code == 200
        assert response["Content-Type"] == "image/gif"
        assert response.content.startswith(b"GIF89a")
    assert not Event.objects.exists()
    assert counters(notification) == {}


def test_click_redirects_to_the_stored_link(client, notification):
    response = get(client, click_path(notification, 0))
    assert response.status_code == 302
    assert response["Location"] == "https://example.com/a"
    assert "no-store" in response["Cache-Control"]
    event = Event.objects.get()
    assert (event.type, event.link.index, event.verdict) == ("clicked", 0, "human")
    report = campaign_report(campaign_id=notification.campaign_id)
    assert report.unique_clicks == 1
    assert [(link.index, link.clicks) for link in report.links] == [(0, 1), (1, 0)]


@pytest.mark.parametrize(
    "path",
    [
        "/t/c/{token}/1",  # a javascript: destination is never followed
        "/t/c/{token}/7",  # no such link
        "/t/c/forged.token/0",
        "/t/c/{tampered}/0",  # one character of the signature changed
        "/t/c/{token}/0?url=https://evil.example",
        "/t/c/{token}//evil.example",
        "/t/c/{token}/0//evil.example",
        "/t/c/{token}/-1",
    ],
)
def test_click_refuses_what_it_cannot_vouch_for(client, notification, path):
    token = token_for(notification.pk)
    tampered = token[:-1] + ("a" if token[-1] != "a" else "b")
    response = get(client, path.format(token=token, tampered=tampered))
    if response.status_code == 302:  # the query string is ignored, never used as a target
        assert response["Location"] == "https://example.com/a"
        assert Event.objects.count() == 1
    else:
        assert response.status_code == 404
        assert "evil" not in response.content.decode()
        assert "Location" not in response
        assert not Event.objects.exists()


def test_tracking_endpoints_refuse_other_methods(client, notification):
    assert client.post(open_path(notification)).status_code == 405
    assert client.post(click_path(notification, 0)).status_code == 405
    assert client.put(click_path(notification, 0)).status_code == 405
    assert not Event.objects.exists()


def test_an_unsubscribe_token_neither_opens_nor_clicks(client, notification, wsgi_pair):
    """The tokens have one purpose each: the unsubscribe link's token records no open or
    click, through Django and through the fast path alike (answered as a forged token)."""
    _, fast, _ = wsgi_pair
    token = unsubscribe_token_for(notification.pk)
    pixel = get(client, f"/t/o/{token}.gif")
    assert (pixel.status_code, pixel.content[:6]) == (200, b"GIF89a")
    assert get(client, f"/t/c/{token}/0").status_code == 404
    status, _, body = fast(f"/t/o/{token}.gif")
    assert (status, body[:6]) == (200, b"GIF89a")
    assert fast(f"/t/c/{token}/0")[0] == 404
    assert not Event.objects.exists()
    assert counters(notification) == {}


def test_links_of_a_previous_key_open_and_click_those_of_an_unknown_key_never(
    client, notification, settings
):
    old_key = settings.SECRET_KEY
    pixel, link = open_path(notification), click_path(notification, 0)  # sent before it
    settings.SECRET_KEY = "the-new-secret-" + "n" * 40
    settings.SECRET_KEY_FALLBACKS = []
    assert get(client, pixel).status_code == 200
    assert get(client, link).status_code == 404
    assert not Event.objects.exists()
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert get(client, link).status_code == 302
    assert get(client, pixel).status_code == 200
    assert open_path(notification) != pixel  # new mail is signed with the new key…
    assert get(client, open_path(notification)).status_code == 200  # …and works too
    assert [v[0] for v in verdicts(notification)] == ["clicked", "opened", "opened"]
    # A key that is neither the key nor a fallback: nothing recorded.
    new_key, settings.SECRET_KEY = settings.SECRET_KEY, "a-key-this-site-never-had-" + "x" * 30
    pixel, link = open_path(notification), click_path(notification, 0)
    settings.SECRET_KEY = new_key
    assert get(client, pixel).status_code == 200
    assert get(client, link).status_code == 404
    assert Event.objects.count() == 3


# --- verdicts and counters ----------------------------------------------------------------------


def test_a_human_open_and_click_count_in_all_and_human(client, notification):
    get(client, open_path(notification))
    get(client, open_path(notification))
    get(client, click_path(notification, 0))
    get(client, click_path(notification, 0))
    assert counters(notification) == {
        "opens": 2, "unique_opens": 1, "human_opens": 2, "unique_human_opens": 1,
        "clicks": 2, "unique_clicks": 1, "human_clicks": 2, "unique_human_clicks": 1,
        "link:0:clicks": 2, "link:0:unique_clicks": 1, "link:0:human_clicks": 2,
        "opens@*": 2, "human_opens@*": 2, "clicks@*": 2, "human_clicks@*": 2,
    }  # fmt: skip
    hour = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H")
    assert campaign_counters(campaign_id=notification.campaign_id)[f"opens@{hour}"] == 2
    kinds = set(FirstEngagement.objects.values_list("notification_id", "kind"))
    assert kinds == {
        (notification.pk, kind) for kind in ("open", "human_open", "click", "human_click")
    }


def test_apple_mpp_prefetch_is_machine_and_the_later_human_open_counts(client, notification):
    get(client, open_path(notification), ua="Mozilla/5.0", ip="17.58.101.5")  # MPP prefetch
    get(client, open_path(notification), ua=BROWSER, ip="172.226.44.9")  # Private Relay egress
    assert counters(notification, "opens", "unique_opens", "human_opens") == {
        "opens": 2, "unique_opens": 1,
    }  # fmt: skip
    get(client, open_path(notification))  # the person, from home
    assert counters(notification, "opens", "unique*", "human_opens") == {
        "opens": 3, "unique_opens": 1, "human_opens": 1, "unique_human_opens": 1,
    }  # fmt: skip
    assert verdicts(notification) == [
        ("opened", "machine", "apple-mpp"),
        ("opened", "machine", "apple-mpp"),
        ("opened", "human", "default"),
    ]


def test_gmail_and_yahoo_proxies_are_human_opens(client, notification):
    gmail = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    get(client, open_path(notification), ua=gmail, ip="66.249.93.12")
    get(client, open_path(notification), ua="YahooMailProxy; https://help.yahoo.com/kb/")
    assert verdicts(notification) == [
        ("opened", "human", "gmail-proxy"),
        ("opened", "human", "yahoo-proxy"),
    ]
    assert counters(notification, "human_opens", "unique_human_opens") == {
        "human_opens": 2, "unique_human_opens": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("ua", "ip", "reason"),
    [
        ("Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", HOME, "barracuda"),
        (BROWSER, "40.107.22.43", "safe-links"),  # Defender Safe Links detonation
        (BROWSER, "148.163.150.7", "proofpoint"),
        (BROWSER, "205.139.110.61", "mimecast"),
        ("python-requests/2.31.0", HOME, "bot-ua"),
    ],
)
def test_link_scanners_click_as_machines(client, notification, ua, ip, reason):
    response = get(client, click_path(notification, 0), ua=ua, ip=ip)
    assert response.status_code == 302  # a scanner is redirected like anyone: it must see the page
    assert verdicts(notification) == [("clicked", "machine", reason)]
    assert counters(notification) == {
        "clicks": 1, "unique_clicks": 1, "clicks@*": 1,
        "link:0:clicks": 1, "link:0:unique_clicks": 1,
    }  # fmt: skip


def test_a_click_seconds_after_the_send_is_machine():
    notification = make_notification(sent_ago=2)
    get(Client(), click_path(notification, 0))
    assert verdicts(notification) == [("clicked", "machine", "fast-click")]
    assert "human_clicks" not in counters(notification)


def test_send_time_comes_from_ses_events_when_there_are_some():
    notification = make_notification(sent_ago=3600)
    # Sent an hour ago, but SES delivered it only 3 s ago (the ledger moved on, to
    # `delivered`): gateways scan on arrival, so a click now is still a scanner's.
    EventFactory(
        notification=notification, delivered=True, esp_event_id="sns-1",
        occurred_at=timezone.now() - timedelta(seconds=3),
    )  # fmt: skip
    Notification.objects.filter(pk=notification.pk).update(
        status="delivered", updated_at=timezone.now() - timedelta(seconds=2)
    )
    get(Client(), click_path(notification, 0))
    assert verdicts(notification)[-1] == ("clicked", "machine", "fast-click")
    # A minute later, a person.
    later = hit_new(kind=CLICK, notification_id=notification.pk, method="GET",
                    user_agent=BROWSER, ip=HOME, index=0)  # fmt: skip
    tracking_hits_record(hits=[_shifted(later, 60)])
    assert verdicts(notification)[-1] == ("clicked", "human", "default")


def test_head_requests_are_recorded_as_machine_and_change_nothing_else(client, notification):
    response = get(client, open_path(notification), method="head")
    assert (response.status_code, response["Content-Type"]) == (200, "image/gif")
    response = get(client, click_path(notification, 0), method="head")
    assert response.status_code == 302
    assert verdicts(notification) == [
        ("opened", "machine", "head"),
        ("clicked", "machine", "head"),
    ]
    assert not counters(notification, "human*", "unique_human*", "link:0:human*")
    assert not FirstEngagement.objects.filter(kind__startswith="human").exists()


def test_every_link_clicked_at_once_turns_them_all_machine():
    notification = make_notification(
        links=["https://example.com/a", "https://example.com/b", "https://example.com/c"]
    )
    client = Client()
    for index in (0, 1):
        get(client, click_path(notification, index))
    # Two of three links: could be a person.
    assert counters(notification, "human_clicks", "unique_human_clicks") == {
        "human_clicks": 2, "unique_human_clicks": 1,
    }  # fmt: skip
    get(client, click_path(notification, 2))  # the third, within the same second
    assert [v[1:] for v in verdicts(notification)] == [("machine", "all-links")] * 3
    # The two clicks counted as human are taken back, with their first engagement.
    names = ("clicks", "unique_clicks", "human*", "unique_human*", "link*")
    assert counters(notification, *names) == {
        "clicks": 3, "unique_clicks": 1,
        "link:0:clicks": 1, "link:1:clicks": 1, "link:2:clicks": 1,
        "link:0:unique_clicks": 1, "link:1:unique_clicks": 1, "link:2:unique_clicks": 1,
    }  # fmt: skip
    assert not FirstEngagement.objects.filter(kind="human_click").exists()
    # The person comes back later and clicks one link: human again.
    later = hit_new(kind=CLICK, notification_id=notification.pk, method="GET",
                    user_agent=BROWSER, ip=HOME, index=1)  # fmt: skip
    tracking_hits_record(hits=[_shifted(later, 600)])
    assert counters(notification, "human_clicks", "unique_human_clicks", "link:1:human*") == {
        "human_clicks": 1, "unique_human_clicks": 1, "link:1:human_clicks": 1,
    }  # fmt: skip


def _shifted(hit, seconds):
    return Hit(hit.id, hit.kind, hit.notification_id, hit.at + seconds, hit.method,
               hit.user_agent, hit.ip, hit.index, hit.honeypot)  # fmt: skip


def test_honeypot_hit_is_machine_and_takes_the_concurrent_clicks_with_it(client):
    notification = make_notification(links=["https://example.com/a", "https://example.com/b"])
    assert campaign_links(notification.campaign_id).honeypot_index == 2
    earlier = hit_new(kind=CLICK, notification_id=notification.pk, method="GET",
                      user_agent=BROWSER, ip=HOME, index=1)  # fmt: skip
    tracking_hits_record(hits=[_shifted(earlier, -600)])  # the person, 10 minutes ago
    get(client, click_path(notification, 0))  # the scanner, looking like a browser
    response = get(client, click_path(notification, 2))  # …follows the invisible link
    assert response.status_code == 200
    assert response.content == b""
    assert "Location" not in response
    assert verdicts(notification) == [
        ("clicked", "human", "default"),
        ("clicked", "machine", "honeypot-burst"),
        ("clicked", "machine", "honeypot"),
    ]
    assert Event.objects.get(verdict_reason="honeypot").link is None
    # The honeypot is a (machine) click of the message, but of no link.
    assert counters(notification, "clicks", "unique*", "human_clicks", "link*") == {
        "clicks": 3, "unique_clicks": 1, "human_clicks": 1, "unique_human_clicks": 1,
        "link:0:clicks": 1, "link:1:clicks": 1, "link:1:human_clicks": 1,
        "link:0:unique_clicks": 1, "link:1:unique_clicks": 1,
    }  # fmt: skip


@pytest.fixture
def fresh_ranges(monkeypatch):
    monkeypatch.setattr(lookups, "RANGE_AFTER", 3)
    monkeypatch.setattr(lookups, "_ranges", ([], []))
    monkeypatch.setattr(lookups, "_lookups", {})
    monkeypatch.setattr(lookups, "_not_dense", set())


def test_a_campaigns_dense_run_of_ids_saves_the_lookup(fresh_ranges, django_assert_num_queries):
    campaign = CampaignFactory()
    rows = NotificationFactory.create_batch(5, campaign=campaign)
    for row in rows[:2]:  # looked up, not mapped yet
        with django_assert_num_queries(1):
            assert notification_campaign(notification_id=row.pk) == campaign.pk
    with django_assert_num_queries(2):  # the third lookup maps the campaign's ids
        assert notification_campaign(notification_id=rows[2].pk) == campaign.pk
    with django_assert_num_queries(0):
        for row in rows:
            assert notification_campaign(notification_id=row.pk) == campaign.pk
    # Outside the run: looked up as before.
    other = make_notification()
    with django_assert_num_queries(1):
        assert notification_campaign(notification_id=other.pk) == other.campaign_id
    assert notification_campaign(notification_id=other.pk + 10**6) is None


def test_interleaved_campaigns_are_never_mapped(fresh_ranges, django_assert_num_queries):
    a, b = CampaignFactory(), CampaignFactory()
    rows = [NotificationFactory(campaign=campaign) for campaign in (a, b, a, b, a, b)]
    for _ in range(3):
        for row in rows:
            assert notification_campaign(notification_id=row.pk) == row.campaign_id
    with django_assert_num_queries(len(rows)):
        for row in rows:
            assert notification_campaign(notification_id=row.pk) == row.campaign_id


def test_recording_the_same_hits_twice_counts_once(notification):
    hits = [
        hit_new(kind=OPEN, notification_id=notification.pk, method="GET", user_agent=BROWSER,
                ip=HOME),
        hit_new(kind=CLICK, notification_id=notification.pk, method="GET", user_agent=BROWSER,
                ip=HOME, index=0),
    ]  # fmt: skip
    assert tracking_hits_record(hits=hits) == 2
    before = counters(notification)
    assert tracking_hits_record(hits=hits) == 0
    assert counters(notification) == before
    assert Event.objects.count() == 2


# --- the Redis buffer and its flusher -------------------------------------------------------------


@pytest.fixture
def buffered(settings):
    """Buffered recording on the test Redis, flushed by the test itself (not by a thread)."""
    settings.TRACKING_BUFFER = True
    settings.TRACKING_FLUSH_IN_WEB = False
    settings.TRACKING_BUFFER_LINGER_MS = 0  # each hit pushed as it comes (lingering: below)
    with redis_buffer("tracking:*") as client:
        yield client


def test_buffered_hits_wait_for_the_flusher_then_are_recorded_once(client, notification, buffered):
    get(client, open_path(notification))
    get(client, open_path(notification), ua="Mozilla/5.0", ip="17.58.101.5")
    get(client, f"/t/o/{token_for(notification.pk + 1000)}.gif")  # signed, but no such row
    assert get(client, click_path(notification, 0)).status_code == 302
    assert get(client, click_path(notification, 1)).status_code == 404  # never queued
    assert not Event.objects.exists()  # the views wrote nothing to the database
    assert queue.buffer_backlog(queue=hits_buffer.QUEUE) == {"queued": 4, "claimed": 0}

    assert tracking_buffer_flush() == 3  # the unknown notification's open is dropped
    assert queue.buffer_backlog(queue=hits_buffer.QUEUE) == {"queued": 0, "claimed": 0}
    assert verdicts(notification) == [
        ("opened", "human", "default"),
        ("opened", "machine", "apple-mpp"),
        ("clicked", "human", "default"),
    ]
    assert counters(notification, "opens", "clicks", "unique*", "human_opens", "human_clicks") == {
        "opens": 2, "unique_opens": 1, "human_opens": 1, "unique_human_opens": 1,
        "clicks": 1, "unique_clicks": 1, "human_clicks": 1, "unique_human_clicks": 1,
    }  # fmt: skip
    assert tracking_buffer_flush() == 0  # nothing left, nothing twice


def test_a_flusher_dying_after_its_commit_records_nothing_twice(client, notification, buffered):
    for _ in range(3):
        get(client, open_path(notification))
    get(client, click_path(notification, 0))
    key, items = queue.buffer_claim(queue=hits_buffer.QUEUE)
    # The flusher records the batch and dies before acknowledging it.
    assert tracking_hits_record(hits=[Hit.loads(raw) for raw in items]) == 4
    before = counters(notification)
    assert queue.buffer_backlog(queue=hits_buffer.QUEUE) == {"queued": 0, "claimed": 1}
    assert tracking_buffer_flush() == 0  # its lease (60 s) has not passed: left alone
    assert queue.buffer_backlog(queue=hits_buffer.QUEUE)["claimed"] == 1
    # Once the lease has passed, another flusher takes the batch over: recorded again, and
    # every hit is found already there, so nothing is written or counted twice.
    assert tracking_buffer_flush(lease_seconds=0) == 0
    assert queue.buffer_backlog(queue=hits_buffer.QUEUE) == {"queued": 0, "claimed": 0}
    assert counters(notification) == before
    assert Event.objects.count() == 4


def test_a_flusher_dying_before_its_commit_loses_nothing(client, notification, buffered):
    get(client, open_path(notification))
    get(client, click_path(notification, 0))
    assert (
        queue.buffer_claim(queue=hits_buffer.QUEUE) is not None
    )  # claimed, then the process is killed
    get(client, open_path(notification))  # traffic goes on meanwhile
    assert tracking_buffer_flush() == 1  # the new hit; the orphan batch waits for its lease
    assert tracking_buffer_flush(lease_seconds=0) == 2
    assert Event.objects.count() == 3
    assert counters(notification, "opens", "clicks") == {"opens": 2, "clicks": 1}


def test_web_processes_flush_only_what_the_flusher_left_waiting(notification, buffered):
    fresh = hit_new(kind=OPEN, notification_id=notification.pk, method="GET",
                    user_agent=BROWSER, ip=HOME)  # fmt: skip
    assert buffer_oldest_wait() is None
    queue.buffer_push(record=fresh.dumps(), queue=hits_buffer.QUEUE)
    assert buffer_oldest_wait() < 5
    assert tracking_flush_if_late() is None  # the flusher's job: left alone
    assert not Event.objects.exists()
    buffered.lpush(hits_buffer.QUEUE, _shifted(fresh, -30).dumps().replace(fresh.id, "trk:old"))
    assert buffer_oldest_wait() > 25
    assert tracking_flush_if_late() == 2  # no flusher, it seems: flushed here
    assert buffer_oldest_wait() is None
    # A batch its flusher died with counts too, once its lease is over.
    queue.buffer_push(
        record=_shifted(fresh, -1).dumps().replace(fresh.id, "trk:orphan"), queue=hits_buffer.QUEUE
    )
    key, _ = queue.buffer_claim(queue=hits_buffer.QUEUE)
    buffered.zadd(hits_buffer.BATCHES, {key: time.time() - queue.LEASE_SECONDS - 1})
    assert buffer_oldest_wait() is not None
    assert tracking_flush_if_late(after_seconds=0) == 1
    assert Event.objects.count() == 3


def test_unreadable_records_are_kept_aside_and_the_rest_recorded(client, notification, buffered):
    get(client, open_path(notification))
    buffered.rpush(hits_buffer.QUEUE, b"not json", b'[1, "x"]')
    get(client, open_path(notification))
    assert tracking_buffer_flush() == 2
    assert buffered.lrange(DEAD_LETTERS, 0, -1) == [b"not json", b'[1, "x"]']
    assert queue.buffer_backlog(queue=hits_buffer.QUEUE) == {"queued": 0, "claimed": 0}


def test_redis_down_means_straight_to_the_database(
    client, notification, buffered, settings, monkeypatch
):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(queue, "_down_until", 0.0)
    assert hits_buffer.buffer_enabled()
    started = time.monotonic()
    assert get(client, open_path(notification)).status_code == 200
    assert queue._down_until > time.monotonic()  # the next requests do not try Redis
    assert get(client, click_path(notification, 0)).status_code == 302
    assert time.monotonic() - started < 5
    assert [v[0] for v in verdicts(notification)] == ["opened", "clicked"]
    assert counters(notification, "opens", "clicks") == {"opens": 1, "clicks": 1}


def test_lingering_pushes_many_hits_in_one_go_and_loses_none(
    client, notification, buffered, settings
):
    settings.TRACKING_BUFFER_LINGER_MS = 60_000  # the pusher thread stays asleep: we push
    for _ in range(5):
        get(client, open_path(notification))
    assert queue.buffer_backlog(queue=hits_buffer.QUEUE)["queued"] == 0  # still in this process
    assert hits_buffer.buffer_push_pending() == 5  # what the thread (or the exit handler) does
    assert queue.buffer_backlog(queue=hits_buffer.QUEUE)["queued"] == 5
    assert tracking_buffer_flush() == 5


def test_lingering_hits_go_to_the_database_when_redis_fails(
    client, notification, buffered, settings, monkeypatch
):
    settings.TRACKING_BUFFER_LINGER_MS = 60_000
    get(client, open_path(notification))
    get(client, click_path(notification, 0))
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # Redis goes away before the push
    monkeypatch.setattr(queue, "_down_until", 0.0)
    assert hits_buffer.buffer_push_pending() == 2
    assert [v[0] for v in verdicts(notification)] == ["opened", "clicked"]


def test_buffered_record_round_trip_and_validation():
    hit = hit_new(kind=CLICK, notification_id=42, method="HEAD", user_agent="é" * 600,
                  ip="2001:db8::1", index=3, honeypot=True)  # fmt: skip
    assert len(hit.user_agent) == 500
    assert Hit.loads(hit.dumps()) == hit
    for bad in [b"", b"{}", b"[2]", hit.dumps().replace('"HEAD"', '"POST"'),
                hit.dumps().replace("42", "-42")]:  # fmt: skip
        with pytest.raises(ValueError):
            Hit.loads(bad)


# --- floods: the repeat cap and the buffer's limits ----------------------------------------------


def _fresh_window(seconds: int, *, room: float) -> None:
    """Wait, if need be, until the current repeat window has `room` seconds left."""
    left = seconds - time.time() % seconds
    if left < room:
        time.sleep(left + 0.01)


class Recording:
    """One way of recording hits (direct, buffered one push per hit, lingering), with what
    records what is waiting and where its drops are counted."""

    def __init__(self, name: str):
        self.name = name
        self._before = self._dropped()

    def flush(self) -> None:
        if self.name == "lingering":
            hits_buffer.buffer_push_pending()  # what the pusher thread does every few ms
        if self.name != "direct":
            tracking_buffer_flush()

    def _dropped(self) -> dict[str, int]:
        if self.name == "direct":
            return repeats.repeats_dropped_counts()  # this process's own count
        return hits_buffer.buffer_dropped()  # every process's, in Redis

    def dropped(self) -> dict[str, int]:
        now = self._dropped()
        return {name: now[name] - self._before[name] for name in now}


@pytest.fixture(params=["direct", "buffered", "lingering"])
def recording(request, settings):
    settings.TRACKING_REPEAT_CAP = 5
    settings.TRACKING_REPEAT_WINDOW_SECONDS = 3600
    _fresh_window(3600, room=60)  # the test's hits all fall in one window
    if request.param == "direct":
        settings.TRACKING_BUFFER = False
        yield Recording("direct")
        return
    settings.TRACKING_BUFFER = True
    settings.TRACKING_FLUSH_IN_WEB = False
    # Lingering: the pusher thread stays asleep; Recording.flush pushes, as it would.
    settings.TRACKING_BUFFER_LINGER_MS = 0 if request.param == "buffered" else 60_000
    with redis_buffer("tracking:*"):
        yield Recording(request.param)


def test_a_flood_of_one_token_stores_the_cap_and_counts_the_rest(client, notification, recording):
    for _ in range(40):
        pixel = get(client, open_path(notification))
        assert (pixel.status_code, pixel["Content-Type"]) == (200, "image/gif")
        click = get(client, click_path(notification, 0))
        assert (click.status_code, click["Location"]) == (302, "https://example.com/a")
    recording.flush()
    assert Event.objects.filter(type="opened").count() == 5
    assert Event.objects.filter(type="clicked").count() == 5
    assert counters(notification, "opens", "clicks", "unique*", "link:0:unique_clicks") == {
        "opens": 5, "clicks": 5, "unique_opens": 1, "unique_clicks": 1,
        "unique_human_opens": 1, "unique_human_clicks": 1, "link:0:unique_clicks": 1,
    }  # fmt: skip
    assert recording.dropped() == {"repeat": 70, "full": 0}


def test_machine_prefetches_never_use_up_the_persons_allowance(client, notification, recording):
    for _ in range(20):
        get(client, open_path(notification), ua="Mozilla/5.0", ip="17.58.101.5")  # Apple MPP
        get(client, click_path(notification, 0), ua="Mozilla/5.0 (compatible; Barracuda)")
        get(client, open_path(notification), method="head")  # a link checker
    get(client, open_path(notification))  # the person, in the same minute
    get(client, click_path(notification, 0))
    recording.flush()
    # The machine opens (prefetches and HEAD probes alike) share one allowance, apart from
    # the person's.
    assert Counter((kind, verdict) for kind, verdict, _ in verdicts(notification)) == {
        ("opened", "machine"): 5, ("clicked", "machine"): 5,
        ("opened", "human"): 1, ("clicked", "human"): 1,
    }  # fmt: skip
    assert counters(notification, "human*", "unique_human*", "link:0:human_clicks") == {
        "human_opens": 1, "unique_human_opens": 1, "human_clicks": 1,
        "unique_human_clicks": 1, "link:0:human_clicks": 1, "human_opens@*": 1,
        "human_clicks@*": 1,
    }  # fmt: skip
    assert recording.dropped() == {"repeat": 50, "full": 0}


def test_a_scanner_flooding_every_link_is_still_caught_by_the_all_links_rule(client, recording):
    """The cap counts each link apart: every link's first clicks are stored, so the scanner
    that walks them all (looking like a browser) is still seen as one."""
    notification = make_notification(links=[f"https://example.com/{x}" for x in "abc"])
    for _ in range(10):
        for index in range(3):
            assert get(client, click_path(notification, index)).status_code == 302
    recording.flush()
    assert set(verdicts(notification)) == {("clicked", "machine", "all-links")}
    assert counters(notification, "clicks", "unique_clicks", "human*", "link*") == {
        "clicks": 15, "unique_clicks": 1,
        "link:0:clicks": 5, "link:1:clicks": 5, "link:2:clicks": 5,
        "link:0:unique_clicks": 1, "link:1:unique_clicks": 1, "link:2:unique_clicks": 1,
    }  # fmt: skip
    assert not FirstEngagement.objects.filter(kind="human_click").exists()


@pytest.mark.parametrize("name", ["direct", "buffered"])
@pytest.mark.slow
def test_the_cap_is_per_window(client, notification, settings, name):
    settings.TRACKING_REPEAT_CAP = 2
    settings.TRACKING_REPEAT_WINDOW_SECONDS = 2
    settings.TRACKING_BUFFER = name == "buffered"
    settings.TRACKING_BUFFER_LINGER_MS = 0
    settings.TRACKING_FLUSH_IN_WEB = False
    with redis_buffer("tracking:*"):
        recording = Recording(name)
        for _ in range(2):
            _fresh_window(2, room=1.5)
            for _ in range(6):
                get(client, open_path(notification))
            _fresh_window(2, room=2)  # the next window
        recording.flush()
        assert Event.objects.count() == 4
        assert recording.dropped() == {"repeat": 8, "full": 0}


def test_the_buffer_holds_at_most_its_limit_and_drops_the_rest(client, buffered, settings):
    settings.TRACKING_REPEAT_WINDOW_SECONDS = 3600
    _fresh_window(3600, room=60)
    settings.TRACKING_BUFFER_MAX_HITS = 10
    window = hits_buffer.REPEATS_PREFIX + str(repeats.repeat_window())
    notifications = [make_notification() for _ in range(4)]
    for notification in notifications:  # 4 repeat keys each: 16 first hits
        for method in ("get", "head"):
            assert get(client, open_path(notification), method=method).status_code == 200
            assert get(client, click_path(notification, 0), method=method).status_code == 302
    assert buffered.llen(hits_buffer.QUEUE) == 10
    assert hits_buffer.buffer_dropped() == {"repeat": 0, "full": 6}
    assert buffered.hlen(window) == 10  # a dropped hit counts no key
    assert 0 < buffered.ttl(window) <= 2 * 3600
    assert tracking_buffer_flush() == 10
    # Drained, but the window counts its limit of keys: a repeat of a counted key is stored,
    # a new key is dropped.
    assert get(client, open_path(notifications[0])).status_code == 200
    assert get(client, open_path(notifications[3])).status_code == 200
    assert buffered.llen(hits_buffer.QUEUE) == 1
    assert hits_buffer.buffer_dropped() == {"repeat": 0, "full": 7}
    # A batch its flusher could not record (the database down) still takes its room: its
    # BATCH_SIZE, whatever it holds.
    settings.TRACKING_BUFFER_MAX_HITS = queue.BATCH_SIZE + 2
    buffered.delete(window)
    assert queue.buffer_claim(queue=hits_buffer.QUEUE) is not None  # claimed, never acknowledged
    for notification in notifications[1:]:
        get(client, open_path(notification))
    assert queue.buffer_backlog(queue=hits_buffer.QUEUE) == {"queued": 2, "claimed": 1}
    assert hits_buffer.buffer_dropped() == {"repeat": 0, "full": 8}


def test_a_large_push_is_split_and_bounded(buffered, settings):
    """Pushes are decided in script calls of at most _PUSH_CHUNK hits (each blocks Redis, the
    broker too, while it runs); the limit holds across them."""
    settings.TRACKING_BUFFER_MAX_HITS = 2500
    pairs = [(f"{n}:o:h", f"record {n}") for n in range(3000)]
    assert hits_buffer.buffer_push_hits(pairs) == []
    assert buffered.llen(hits_buffer.QUEUE) == 2500
    assert buffered.lrange(hits_buffer.QUEUE, 0, 1) == [b"record 0", b"record 1"]
    assert hits_buffer.buffer_dropped() == {"repeat": 0, "full": 500}
    buffered.delete(hits_buffer.QUEUE)  # records of no hit: not for the flusher


def test_a_flood_while_redis_is_down_is_capped_in_the_process(
    client, notification, buffered, settings, monkeypatch
):
    settings.TRACKING_REPEAT_WINDOW_SECONDS = 3600
    _fresh_window(3600, room=60)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(queue, "_down_until", 0.0)
    before = repeats.repeats_dropped_counts()["repeat"]
    for _ in range(20):
        assert get(client, open_path(notification)).status_code == 200
    settings.TRACKING_BUFFER_LINGER_MS = 60_000  # and the pusher's fallback alike
    for _ in range(20):
        assert get(client, click_path(notification, 0)).status_code == 302
    assert hits_buffer.buffer_push_pending() == 20
    assert [v[0] for v in verdicts(notification)] == ["opened"] * 5 + ["clicked"] * 5
    assert repeats.repeats_dropped_counts()["repeat"] - before == 30


def test_a_process_holds_a_bounded_number_of_pending_hits(
    client, notification, buffered, settings, monkeypatch
):
    settings.TRACKING_BUFFER_LINGER_MS = 60_000
    monkeypatch.setattr(hits_buffer, "PENDING_MAX", 3)
    before = repeats.repeats_dropped_counts()["full"]
    for _ in range(5):
        assert get(client, open_path(notification)).status_code == 200
    assert repeats.repeats_dropped_counts()["full"] - before == 2
    assert hits_buffer.buffer_push_pending() == 3
    assert tracking_buffer_flush() == 3


def test_drops_are_logged_once_per_window_with_counts_only(
    client, notification, settings, caplog, monkeypatch
):
    settings.TRACKING_REPEAT_CAP = 1
    settings.TRACKING_REPEAT_WINDOW_SECONDS = 3600
    _fresh_window(3600, room=60)
    monkeypatch.setattr(repeats, "_logged_window", -1)  # nothing logged yet in this window
    for _ in range(30):
        get(client, open_path(notification))
    messages = [r.getMessage() for r in caplog.records]
    logged = [m for m in messages if "tracking hits dropped" in m]
    assert len(logged) == 1  # not one line per dropped hit
    assert "repeat=" in logged[0]
    assert token_for(notification.pk) not in "\n".join(messages)


# --- the WSGI fast path ---------------------------------------------------------------------------


class Wsgi:
    """Requests straight to a WSGI application (as a WSGI server would call it)."""

    def __init__(self, application, *, close_connections=False):
        self.application = application
        self.factory = RequestFactory()
        # Off as Django's test client has it off: closing the connection that holds the
        # test's transaction would end the test (a transactional test turns it on).
        self.close_connections = close_connections

    def __call__(self, path, method="GET", **headers):
        environ = getattr(self.factory, method.lower())(path, **headers).environ
        return call_wsgi(self.application, environ, close_connections=self.close_connections)


@pytest.fixture
def wsgi_pair():
    calls = []
    django_app = WSGIHandler()

    def spy(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return django_app(environ, start_response)

    return Wsgi(spy), Wsgi(tracking_wsgi(spy)), calls


HEADERS = ("Content-Type", "Location", "Cache-Control", "Expires", "X-Content-Type-Options",
           "Referrer-Policy", "X-Frame-Options")  # fmt: skip


def test_the_fast_path_answers_exactly_as_django_does(notification, wsgi_pair):
    plain, fast, calls = wsgi_pair
    headers = {"HTTP_USER_AGENT": BROWSER, "REMOTE_ADDR": HOME}
    paths = [
        open_path(notification), click_path(notification, 0), click_path(notification, 1),
        click_path(notification, 2), click_path(notification, 9), "/t/o/forged.gif",
        "/t/c/forged.x/0",
    ]  # fmt: skip
    for path in paths:
        for method in ("GET", "HEAD"):
            expected = plain(path, method, **headers)
            del calls[:]
            got = fast(path, method, **headers)
            assert calls == [], f"{method} {path} went through Django"
            assert got[0] == expected[0], path
            assert got[2] == expected[2], path
            for name in HEADERS:
                assert got[1].get(name) == expected[1].get(name), (path, name)
    # Both recorded every hit the same way: each pair of events has one verdict and reason.
    events = list(Event.objects.order_by("id").values_list("type", "verdict_reason", "link_id"))
    assert len(events) == 2 * 2 * 3  # open, click on link 0, honeypot; GET and HEAD; twice
    assert events[0::2] == events[1::2]


def test_the_fast_path_leaves_everything_else_to_django(notification, wsgi_pair, settings):
    _, fast, calls = wsgi_pair
    assert fast("/t/c/forged.x/0", "POST")[0] == 405
    assert fast(open_path(notification) + "/extra")[0] == 404
    assert fast("/admin/login/")[0] == 200
    settings.ALLOWED_HOSTS = ["testserver"]
    assert fast(open_path(notification), HTTP_HOST="evil.example")[0] == 400  # ALLOWED_HOSTS
    assert len(calls) == 4
    settings.SECURE_SSL_REDIRECT = True  # (Django's middleware reads it when it is built)
    assert Wsgi(tracking_wsgi(WSGIHandler()))(open_path(notification))[0] == 301
    assert not Event.objects.exists()


class ClosingCache(LocMemCache):
    """A cache backend whose close() does something (as Django's memcached ones do)."""

    closed = 0

    def close(self, **kwargs):
        ClosingCache.closed += 1


def test_the_fast_path_closes_the_caches_that_need_it(notification, wsgi_pair, settings):
    _, fast, _ = wsgi_pair
    assert not wsgi_direct._caches_close()  # LocMem and Redis: nothing to close
    settings.CACHES = {
        **settings.CACHES,
        "closing": {"BACKEND": f"{__name__}.ClosingCache", "LOCATION": "closing"},
    }
    assert wsgi_direct._caches_close()
    caches["closing"].get("warm")  # in use in this thread, as a request would have it
    closed = ClosingCache.closed
    assert fast(open_path(notification))[0] == 200
    assert ClosingCache.closed == closed + 1  # once, when the response was closed


@pytest.mark.django_db(transaction=True)
def test_the_fast_path_closes_database_connections_like_django():
    notification = make_notification()
    fast = Wsgi(tracking_wsgi(WSGIHandler()), close_connections=True)
    assert fast(click_path(notification, 0))[0] == 302  # reads its campaign: connected
    assert connection.connection is not None
    connection.close_at = time.monotonic() - 1  # past CONN_MAX_AGE
    fast(click_path(notification, 0))
    assert connection.connection is None  # closed when the response was
    assert Event.objects.count() == 2  # and the next query connects again
