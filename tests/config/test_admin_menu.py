"""The admin's home and menu: a marketer sees a dashboard and the marketing pages; the
operators' tables (beat, pending and raw SES events) show only to superusers, apart, last."""

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from campaigns.counters import CounterName, counters_add
from campaigns.quota import ses_send_quota_forget
from campaigns.ses import ses_client_reset
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    ContactListFactory,
    EventFactory,
    NotificationFactory,
)

pytestmark = pytest.mark.django_db

MARKETER_PERMS = [
    ("campaigns", "view_campaign"), ("campaigns", "change_campaign"),
    ("campaigns", "view_contact"), ("campaigns", "view_contactlist"),
    ("campaigns", "view_notification"), ("templates_app", "view_template"),
    ("templates_app", "change_template"),
]  # fmt: skip
SYSTEM_PAGES = [
    "/admin/django_celery_beat/periodictask/",
    "/admin/tracking/event/",
    "/admin/tracking/pendingespevent/",
]


def _client(*, superuser: bool, perms=MARKETER_PERMS, everything=False) -> Client:
    user = User.objects.create_user(
        username="super" if superuser else "marketer", password="x", is_staff=True,
        is_superuser=superuser,
    )  # fmt: skip
    if everything:
        user.user_permissions.set(Permission.objects.all())
    for app_label, codename in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


def _sections(html: str) -> list[str]:
    """The app list's section names in page order (the home page's table captions)."""
    return re.findall(r'<caption>\s*<a href="[^"]*" class="section"[^>]*>([^<]+)</a>', html)


@pytest.mark.parametrize("everything", [False, True])
def test_a_marketer_sees_no_plumbing_even_with_every_model_permission(everything):
    client = _client(superuser=False, everything=everything)
    page = client.get("/admin/").content.decode()
    assert "System (operators)" not in page
    for url in SYSTEM_PAGES:
        assert url not in page
        assert client.get(url).status_code == 403
    assert "/admin/campaigns/campaign/" in page and "/admin/templates_app/template/" in page


def test_a_superuser_sees_the_plumbing_apart_and_last():
    page = _client(superuser=True, perms=[]).get("/admin/").content.decode()
    sections = _sections(page)
    assert sections[-1] == "System (operators)", sections
    system = page[page.index("System (operators)") :]
    for url in SYSTEM_PAGES:
        assert page.count(f'href="{url}"') >= 1 and url in system
    # Nothing of the system is left in the marketing sections above it.
    marketing = page[: page.index("System (operators)")]
    for url in SYSTEM_PAGES:
        assert f'<a href="{url}"' not in marketing.split('id="nav-sidebar"')[0]
    assert "Periodic Tasks" not in sections
    # Tracking's section above holds only what integrators' admins use: callback endpoints.
    if "Tracking" in sections:
        tracking = marketing[marketing.index(">Tracking<") :]
        tracking = tracking[: tracking.index("</table>")]
        assert set(re.findall(r'href="/admin/tracking/(\w+)/"', tracking)) == {"callbackendpoint"}


def test_the_dashboard_shows_recent_campaigns_rates_and_list_sizes():
    contact_list = ContactListFactory(name="Spring <readers>")
    contact_list.contacts.add(*[ContactFactory() for _ in range(3)])
    campaign = CampaignFactory(name="April <b>news</b>", status="sent", recipient_count=10)
    counters_add(
        campaign_id=campaign.pk,
        deltas={CounterName.SENT: 10, CounterName.UNIQUE_OPENS: 4, CounterName.UNIQUE_CLICKS: 1},
    )
    page = _client(superuser=False).get("/admin/").content.decode()
    dashboard = page[page.index('id="dashboard"') : page.index("send-quota")]
    assert "April &lt;b&gt;news&lt;/b&gt;" in dashboard  # names are escaped
    assert "Spring &lt;readers&gt;" in dashboard
    assert f"/admin/campaigns/campaign/{campaign.pk}/change/" in dashboard
    assert "40.0 %" in dashboard and "10.0 %" in dashboard  # open and click rates, out of sent
    assert re.search(r"Spring &lt;readers&gt;</a></th>\s*<td>3</td>", dashboard)
    assert "app-campaigns" in page  # Django's list of pages stays, below the dashboard
    assert page.index('id="dashboard"') < page.index("app-campaigns")


def test_the_dashboard_words_a_campaign_status_as_the_campaign_list_does():
    due = CampaignFactory(name="Due", status="scheduled", scheduled_at=timezone.now())
    client = _client(superuser=False)
    page = client.get("/admin/").content.decode()
    assert re.search(rf'{due.pk}/change/">Due</a></th>\s*<td>Starting</td>', page)
    assert "Starting" in client.get("/admin/campaigns/campaign/").content.decode()


def test_the_dashboard_reads_the_send_quota_from_ses(ses):
    ses_send_quota_forget()
    try:
        page = _client(superuser=False).get("/admin/").content.decode()
    finally:
        ses_send_quota_forget()
    quota = re.search(r'id="send-quota">([^<]*)<', page).group(1)
    assert re.fullmatch(r"0 of [\d,]+ sent; [\d,]+ left, at up to [\d,]+ per second", quota), quota


def test_the_dashboard_says_unknown_when_ses_does_not_answer(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", "http://127.0.0.1:9")  # discard: nobody answers
    ses_client_reset()
    ses_send_quota_forget()
    try:
        page = _client(superuser=False).get("/admin/").content.decode()
    finally:
        monkeypatch.undo()
        ses_client_reset()
        ses_send_quota_forget()
    assert re.search(r'id="send-quota">unknown<', page)


def test_the_dashboard_shows_only_what_the_user_may_view():
    CampaignFactory(name="Hidden campaign")
    page = _client(superuser=False, perms=[("templates_app", "view_template")]).get("/admin/")
    html = page.content.decode()
    assert "Recent campaigns" not in html and "Hidden campaign" not in html
    assert "On the list" not in html


def test_the_dashboard_costs_the_same_few_queries_for_many_campaigns(
    django_assert_max_num_queries,
):
    client = _client(superuser=False)
    client.get("/admin/")  # (the session and the user's permissions, once)
    for _ in range(30):
        campaign = CampaignFactory(status="sent", recipient_count=100)
        counters_add(campaign_id=campaign.pk, deltas={CounterName.SENT: 100})
        ContactListFactory().contacts.add(ContactFactory())
        EventFactory(notification__campaign=campaign)
    # Django's own four (session, user, permissions ×2) and recent actions; the dashboard's
    # five: campaigns, their counters, their rows for the reports, lists, their counts.
    with django_assert_max_num_queries(10) as captured:
        response = client.get("/admin/")
    assert response.status_code == 200
    tables = " ".join(query["sql"] for query in captured.captured_queries)
    assert "campaigns_notification" not in tables and "tracking_event" not in tables


def test_the_menu_and_the_campaign_page_speak_plainly():
    campaign = CampaignFactory(ses_template_name="mailwright-c1-abc")
    client = _client(superuser=False)
    home = client.get("/admin/").content.decode()
    assert ">Messages<" in home and "Notifications" not in home
    page = client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "How it is sent" in page and "In batches of 50 (recommended)" in page
    assert "Send path" not in page and "Ses template name" not in page
    assert "mailwright-c1-abc" not in page  # the engine's own names: superusers only
    superuser = _client(superuser=True, perms=[])
    page = superuser.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "SES stored template" in page and "mailwright-c1-abc" in page


def test_the_events_list_names_what_happened_and_deletes_nothing():
    event = EventFactory(clicked=True, notification__campaign__name="June <news>")
    client = _client(superuser=True, perms=[])
    page = client.get("/admin/tracking/event/").content.decode()
    assert "June &lt;news&gt;" in page
    assert f"/admin/campaigns/campaign/{event.notification.campaign_id}/change/" in page
    assert f"Message #{event.notification_id}" in page
    assert 'value="delete_selected"' not in page
    response = client.post(f"/admin/tracking/event/{event.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert (
        client.get("/admin/tracking/pendingespevent/")
        .content.decode()
        .count('value="delete_selected"')
        == 0
    )


def test_a_messages_journey_speaks_plainly():
    message = NotificationFactory(sent=True)
    page = _client(superuser=False).get(f"/admin/campaigns/notification/{message.pk}/change/")
    html = page.content.decode()
    assert f"Journey of message #{message.pk}" in html
    assert "added to the campaign&#x27;s recipients" in html
    assert "ledger</td>" not in html and "notification #" not in html
