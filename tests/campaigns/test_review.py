"""The pre-send review: its numbers, the link check, the SES quota, the schedule in the user's
time zone, and who may confirm (PostgreSQL, Redis and the local SES endpoint, as everywhere)."""

import time
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from campaigns import linkcheck
from campaigns.models import Campaign, Contact, LinkCheck, Membership, Notification
from campaigns.preferences import user_preferences_update, user_time_zone
from campaigns.quota import ses_send_quota, ses_send_quota_forget
from campaigns.ratelimit import ses_rate_limiter_reset
from campaigns.review import GMAIL_CLIP_BYTES, campaign_review
from campaigns.selectors import audience_counts
from campaigns.services import CampaignError, campaign_freeze, campaign_send_now, campaign_start
from infra.redis_client import redis_client
from tests.campaigns.ses.test_ses_client import TinyServer
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    ContactListFactory,
    TemplateFactory,
    list_with_contacts,
)
from tests.review_helpers import confirm_schedule, confirm_send_now, review_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_quota():
    ses_send_quota_forget()
    yield
    ses_send_quota_forget()


def _mixed_list():
    """5 who receive it; left out: 1 unsubscribed from all mail, 1 bounced, 1 complained, and
    2 unsubscribed from this list only (one of them also bounced: counted once, as the list's)."""
    contact_list = list_with_contacts(5)
    left_out = [
        ContactFactory(status=Contact.Status.UNSUBSCRIBED),
        ContactFactory(status=Contact.Status.BOUNCED),
        ContactFactory(status=Contact.Status.COMPLAINED),
    ]
    listed = [ContactFactory(), ContactFactory(status=Contact.Status.BOUNCED)]
    Membership.objects.bulk_create(
        [Membership(contact_list=contact_list, contact=c) for c in left_out]
        + [
            Membership(contact_list=contact_list, contact=c, unsubscribed_at=timezone.now())
            for c in listed
        ]
    )
    return contact_list


def test_the_review_counts_the_audience_after_suppressions_and_list_unsubscribes(admin_client):
    campaign = CampaignFactory(contact_list=_mixed_list())
    review = campaign_review(campaign=campaign, send_at=None)
    assert review.recipients == 5 and review.blocked == []
    assert dict(review.excluded) == {
        "unsubscribed from this list": 2,
        "unsubscribed from all mail": 1,
        "bounced (address does not exist)": 1,
        "marked a message as spam": 1,
    }
    page = admin_client.get(review_url(campaign)).content.decode()
    assert "Send to 5 recipients now" in page
    assert "2 unsubscribed from this list" in page and "1 marked a message as spam" in page


def test_the_freeze_sends_to_exactly_the_audience_the_review_counted(
    admin_client, ses, django_capture_on_commit_callbacks
):
    campaign = CampaignFactory(contact_list=_mixed_list())
    counted = campaign_review(campaign=campaign, send_at=None).recipients
    with django_capture_on_commit_callbacks(execute=False):
        assert confirm_send_now(admin_client, campaign).status_code == 302
        campaign_start(campaign_id=campaign.pk)
        campaign_freeze(campaign_id=campaign.pk)
    frozen = Notification.objects.filter(campaign=campaign).values_list(
        "contact__status", flat=True
    )
    assert len(frozen) == counted == 5 and set(frozen) == {Contact.Status.ACTIVE}


def test_the_guarded_services_refuse_a_list_the_review_counts_no_one_in():
    """campaign_check_sendable reads the review's audience rule: active contacts who
    unsubscribed from this list only are no one to send to either."""
    contact_list = list_with_contacts(2)
    Membership.objects.filter(contact_list=contact_list).update(unsubscribed_at=timezone.now())
    campaign = CampaignFactory(contact_list=contact_list)
    assert audience_counts(contact_list_id=contact_list.pk)[0] == 0
    with pytest.raises(CampaignError, match="has no active contacts"):
        campaign_send_now(campaign=campaign)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_contacts_missing_a_field_without_a_fallback_are_counted():
    template = TemplateFactory(
        subject="Hi {{ first_name }}",
        html=(
            '<p>{{ city }} {{ country | default: "your country" }}'
            "{% if plan %}{{ plan }}{% endif %} {{ unsubscribe_url }}</p>"
        ),
        text="{{ city }}",
    )
    contact_list = ContactListFactory()
    contacts = [
        ContactFactory(first_name="", attributes={"city": "Oslo"}),
        ContactFactory(attributes={"city": ""}),
        ContactFactory(attributes={"city": None}),
        ContactFactory(attributes={}),
        ContactFactory(attributes={"city": 0}),  # a value, though falsy in Python
        ContactFactory(first_name="", status=Contact.Status.BOUNCED),  # not in the audience
    ]
    Membership.objects.bulk_create(
        Membership(contact_list=contact_list, contact=c) for c in contacts
    )
    campaign = CampaignFactory(template=template, contact_list=contact_list)
    review = campaign_review(campaign=campaign, send_at=None)
    # country has a fallback; plan shows only when present; unsubscribe_url is the sender's.
    assert review.missing_fields == [("city", 3), ("first_name", 1)]
    assert review.has_unsubscribe_link


def test_the_size_is_the_html_as_sent_with_tracking_against_gmail_clipping(admin_client):
    small = CampaignFactory(contact_list=list_with_contacts(1))
    review = campaign_review(campaign=small, send_at=None)
    assert len(small.template.html.encode()) < review.html_bytes < 2000  # tracking added
    assert not review.clipped and not review.has_unsubscribe_link
    page = admin_client.get(review_url(small)).content.decode()
    assert "under Gmail" in page and "no unsubscribe link" in page

    # 100 kB of source: under the limit as typed, over it once each link is a tracked one.
    links = "".join(f'<a href="https://example.com/{i}">{i}</a>' for i in range(400))
    padding = "x" * (100 * 1024 - len(links))
    big = CampaignFactory(
        contact_list=list_with_contacts(1),
        template=TemplateFactory(html=f"<p>{links}{padding}</p>"),
    )
    review = campaign_review(campaign=big, send_at=None)
    assert len(big.template.html.encode()) < GMAIL_CLIP_BYTES < review.html_bytes
    assert review.clipped
    assert "Gmail cuts messages off" in admin_client.get(review_url(big)).content.decode()


def test_blocked_reviews_disable_the_button_with_the_reason(admin_client):
    empty = CampaignFactory()
    broken = CampaignFactory(
        contact_list=list_with_contacts(1), template=TemplateFactory(html="{% if x %}")
    )
    for campaign, reason in ((empty, "has no contact to send to"), (broken, "does not compile")):
        page = admin_client.get(review_url(campaign)).content.decode()
        assert reason in page and "disabled" in page
        confirm_send_now(admin_client, campaign)
        campaign.refresh_from_db()
        assert campaign.status == Campaign.Status.DRAFT


def test_the_confirmation_reviews_again_and_refuses_a_changed_audience(admin_client):
    campaign = CampaignFactory(contact_list=list_with_contacts(3))
    response = admin_client.post(review_url(campaign), {"send_at": "", "recipients": "2"})
    assert response.status_code == 200
    assert "The audience changed since the review (3 recipients now)" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


# -- the link check ---------------------------------------------------------------------------


class LinkServer(TinyServer):
    """Answers /ok 200, /missing 404, /error 500, /inside a redirect to localhost; /slow never
    answers in time. `hits`: the paths asked for."""

    def __init__(self):
        self.hits: list[str] = []
        super().__init__()

    def _handle(self, conn):
        with conn:
            reader = conn.makefile("rb")
            request = self._read_request(reader)
            if request is None:
                return
            path = request[0]
            if path == "/slow":
                time.sleep(3)
                return
            self.hits.append(path)
            if path == "/inside":  # a redirect to this same server, named as a private host
                location = f"http://localhost:{self.port}/ok"
                conn.sendall(
                    f"HTTP/1.1 302 X\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
                )
                return
            status = {"/ok": 200, "/missing": 404, "/error": 500}.get(path, 404)
            conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())


def test_links_are_checked_in_the_background_and_polled(
    admin_client, eager_celery, django_capture_on_commit_callbacks, monkeypatch, settings
):
    settings.LINK_CHECK_PRIVATE_ADDRESSES = True  # the test's server is on 127.0.0.1
    monkeypatch.setattr(linkcheck, "LINK_TIMEOUT_SECONDS", 0.5)
    server = LinkServer()
    paths = ["ok", "missing", "error", "slow"]
    html = "".join(f'<a href="{server.url}/{p}">{p}</a>' for p in paths)
    campaign = CampaignFactory(
        contact_list=list_with_contacts(1), template=TemplateFactory(html=html, text="Hi")
    )
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        page = admin_client.get(review_url(campaign)).content.decode()
    assert "Checking 4 links" in page
    polled = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/links/").json()
    assert polled["checking"] is True  # the page answered before any link was fetched
    for callback in enqueued:
        callback()  # the task runs (eagerly) as the commit would start it

    polled = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/links/").json()
    assert polled["checking"] is False
    answers = [(row["url"].rsplit("/", 1)[1], row["key"], row["status"]) for row in polled["links"]]
    assert answers == [
        ("ok", "ok", 200), ("missing", "broken", 404), ("error", "broken", 500),
        ("slow", "unreachable", None),
    ]  # fmt: skip
    # Opened again soon after: the results stand, nothing is fetched again.
    with django_capture_on_commit_callbacks(execute=False) as again:
        admin_client.get(review_url(campaign))
    assert again == [] and LinkCheck.objects.filter(campaign=campaign).count() == 4
    server.close()


def test_only_http_links_without_credentials_are_fetched():
    assert linkcheck.link_answer("ftp://example.com/x") == ("unreachable", None)
    assert linkcheck.link_answer("https://user:secret@127.0.0.1:9/") == ("unreachable", None)


# -- the SES quota ----------------------------------------------------------------------------


def test_the_quota_comes_from_the_local_ses_endpoint(ses, ses_kind):
    quota = ses_send_quota()  # through each SES client (ses_kind)
    assert quota is not None
    assert quota.max_send_rate > 0 and quota.max_24_hour_send > 0
    assert quota.sent_last_24_hours == 0


def test_the_rate_and_the_quota_share_one_get_account_reading(ses, settings):
    settings.SES_MAX_SEND_RATE = 0  # the rate from GetAccount, not from the setting
    ses_rate_limiter_reset()
    if client := redis_client(timeout=5):  # no rate another test left in Redis
        client.delete(f"ratelimit:ses-max-send-rate:{settings.AWS_SES_REGION}")
    try:
        review = campaign_review(campaign=CampaignFactory(), send_at=None)
    finally:
        ses_rate_limiter_reset()
    assert review.send_rate > 0 and review.quota is not None
    assert ses.stats()["calls"]["GetAccount"] == 1


def test_the_quota_is_none_when_ses_cannot_be_reached(ses_unreachable):
    assert ses_send_quota() is None


# -- the schedule, in the user's time zone ------------------------------------------------------


def test_a_new_york_user_scheduling_9am_in_winter_stores_14_utc(admin_client, admin_user):
    user_preferences_update(user=admin_user, time_zone="America/New_York")
    campaign = CampaignFactory(contact_list=list_with_contacts(2))
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert '<option value="America/New_York" selected>' in page
    form = admin_client.post(
        f"/admin/campaigns/campaign/{campaign.pk}/schedule/",
        {"send_at": "2030-01-15T09:00", "time_zone": "America/New_York"},
    )
    review = admin_client.get(form["Location"]).content.decode()
    assert (
        "Schedule for 2 recipients on Tuesday 15 January 2030, 09:00 (America/New_York)" in review
    )
    confirm_schedule(admin_client, campaign, datetime(2030, 1, 15, 14, tzinfo=UTC))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.scheduled_at == datetime(2030, 1, 15, 14, tzinfo=UTC)
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "sends at Jan. 15, 2030, 9 a.m. (America/New_York)" in page
    listing = admin_client.get("/admin/campaigns/campaign/").content.decode()
    assert "Tuesday 15 January 2030, 09:00 (America/New_York)" in listing


def test_the_zone_picked_on_the_form_is_remembered(admin_client, admin_user):
    campaign = CampaignFactory(contact_list=list_with_contacts(1))
    form = admin_client.post(
        f"/admin/campaigns/campaign/{campaign.pk}/schedule/",
        {"send_at": "2030-07-01T09:00", "time_zone": "Europe/Paris"},
    )
    assert "send_at=2030-07-01T09%3A00%3A00%2B02%3A00" in form["Location"]  # summer: +2
    assert user_time_zone(user=admin_user).key == "Europe/Paris"
    bad = admin_client.post(
        f"/admin/campaigns/campaign/{campaign.pk}/schedule/",
        {"send_at": "2030-07-01T09:00", "time_zone": "Mars/Olympus"},
        follow=True,
    )
    assert "Mars/Olympus" in bad.content.decode()  # the choice refused, with the value named
    assert user_time_zone(user=admin_user).key == "Europe/Paris"


# -- who may confirm ----------------------------------------------------------------------------


def _user(*perms: str) -> Client:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


def test_view_only_users_cannot_review_or_confirm():
    campaign = CampaignFactory(contact_list=list_with_contacts(2))
    viewer = _user("campaigns.view_campaign")
    assert viewer.get(review_url(campaign)).status_code == 403
    assert confirm_send_now(viewer, campaign).status_code == 403
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_the_confirmation_needs_the_csrf_token(admin_user):
    campaign = CampaignFactory(contact_list=list_with_contacts(2))
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert confirm_send_now(client, campaign).status_code == 403
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "169.254.169.254", "10.0.0.5"],  # noqa: S104
)
def test_the_link_check_never_fetches_the_servers_own_network(host):
    server = LinkServer()
    assert linkcheck.link_answer(f"http://{host}:{server.port}/ok") == ("unreachable", None)
    assert server.hits == []


def test_a_redirect_into_the_servers_own_network_is_not_followed(monkeypatch):
    server = LinkServer()
    # The first hop passes as public; where it redirects (localhost) must still be refused.
    monkeypatch.setattr(linkcheck, "_public_host", lambda host: host == "127.0.0.1")
    assert linkcheck.link_answer(f"{server.url}/inside") == ("unreachable", None)
    assert server.hits == ["/inside"]


def test_private_addresses_are_fetched_when_the_site_allows_it(settings):
    settings.LINK_CHECK_PRIVATE_ADDRESSES = True
    server = LinkServer()
    assert linkcheck.link_answer(f"{server.url}/inside") == ("ok", 200)
    assert server.hits == ["/inside", "/ok"]
