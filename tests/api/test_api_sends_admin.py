"""The admin's pages of what the API sends: transactional streams and bulk jobs, read-only,
with counts, progress, the key and links to their messages; a job cancelled, or resumed after
the circuit breaker paused it, after a confirmation, through the API's own services."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client

from campaigns import services
from campaigns.breaker import campaign_circuit_check
from campaigns.counters import CounterName, counters_add
from campaigns.models import Campaign, Notification
from tests.api.helpers import api_client
from tests.factories import TemplateFactory

JOBS = "/admin/campaigns/bulkjob/"
STREAMS = "/admin/campaigns/transactionalstream/"


def _staff(*perms: str) -> Client:
    user = User.objects.create_user(
        username=f"user{User.objects.count()}", password="x", is_staff=True
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="campaigns", codename__in=perms)
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def sends(ses):
    """A job of 3 rows (started, its batches left queued) and a stream with one message."""
    TemplateFactory(slug="notice", subject="Notice", html="<p>Notice</p>")
    api = api_client()
    rows = [{"to": f"j{i}@example.com", "reference": f"ref-{i}"} for i in range(3)]
    job_id = api.post("/api/v1/jobs", {"template": "notice", "rows": rows}, format="json").json()[
        "id"
    ]
    services.campaign_start(campaign_id=job_id)
    message = api.post(
        "/api/v1/messages", {"template": "notice", "to": "t@example.com"}, format="json"
    ).json()["id"]
    stream_id = Notification.objects.get(pk=message).campaign_id
    return api, job_id, stream_id


@pytest.mark.django_db
def test_jobs_and_streams_are_listed_with_counts_progress_key_and_messages(admin_client, sends):
    api, job_id, stream_id = sends
    counters_add(campaign_id=job_id, deltas={CounterName.SENT: 2, CounterName.DELIVERED: 1})
    jobs_page = admin_client.get(JOBS).content.decode()
    assert f"{JOBS}{job_id}/change/" in jobs_page
    assert "3 of 3 created, 2 answered (2 sent)" in jobs_page
    assert "pending 1, sent 2, delivered 1" in jobs_page
    assert f"tests ({api.key.prefix})" in jobs_page
    assert f"/admin/campaigns/notification/?campaign__id__exact={job_id}" in jobs_page
    # A job is not a stream, and neither is on the marketer's campaign page.
    assert f"{STREAMS}{job_id}/change/" not in admin_client.get(STREAMS).content.decode()
    counters_add(campaign_id=stream_id, deltas={CounterName.SENT: 1, CounterName.BOUNCED_HARD: 1})
    streams_page = admin_client.get(STREAMS).content.decode()
    assert f"{STREAMS}{stream_id}/change/" in streams_page
    assert "sent 1, bounced 1" in streams_page
    assert f"?campaign__id__exact={stream_id}" in streams_page
    campaigns_page = admin_client.get("/admin/campaigns/campaign/").content.decode()
    assert f"/{job_id}/change/" not in campaigns_page
    # The messages link lists the job's messages, with their references a search away.
    messages = admin_client.get(f"/admin/campaigns/notification/?campaign__id__exact={job_id}")
    assert messages.content.decode().count("j0@example.com") == 1
    row = Notification.objects.get(campaign_id=job_id, contact__email="j1@example.com")
    message_page = admin_client.get(f"/admin/campaigns/notification/{row.pk}/change/")
    assert "ref-1" in message_page.content.decode()  # its reference and key, on its page
    assert f"tests ({api.key.prefix})" in message_page.content.decode()

    page = admin_client.get(f"{JOBS}{job_id}/change/").content.decode()
    assert "3 accepted, 0 refused" in page
    assert 'name="_save"' not in page  # read-only: nothing to save
    assert f"{JOBS}{job_id}/cancel/" in page and f"{JOBS}{job_id}/resume/" not in page
    assert admin_client.get(f"{JOBS}add/").status_code == 403
    assert admin_client.post(f"{JOBS}{job_id}/delete/").status_code == 403


@pytest.mark.django_db
def test_a_job_is_cancelled_after_a_confirmation(admin_client, sends):
    _, job_id, _ = sends
    confirm = admin_client.get(f"{JOBS}{job_id}/cancel/")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    assert Campaign.objects.get(pk=job_id).status == "sending"  # asking is not cancelling
    answer = admin_client.post(f"{JOBS}{job_id}/cancel/")
    assert answer.status_code == 302 and answer["Location"] == f"{JOBS}{job_id}/change/"
    assert Campaign.objects.get(pk=job_id).status == "cancelled"
    assert set(
        Notification.objects.filter(campaign_id=job_id).values_list("status", flat=True)
    ) == {"skipped"}
    assert LogEntry.objects.filter(change_message="Cancel").count() == 1
    again = admin_client.post(f"{JOBS}{job_id}/cancel/", follow=True)
    assert "cannot be cancelled" in again.content.decode()


@pytest.mark.django_db
def test_a_job_the_breaker_paused_is_resumed_after_a_confirmation(admin_client, sends, settings):
    _, job_id, _ = sends
    assert admin_client.post(f"{JOBS}{job_id}/resume/", follow=True).status_code == 200
    assert Campaign.objects.get(pk=job_id).status == "sending"  # not paused: refused
    settings.CIRCUIT_BREAKER_MIN_SENT = 10
    counters_add(campaign_id=job_id, deltas={CounterName.SENT: 10, CounterName.BOUNCED_HARD: 5})
    assert campaign_circuit_check(campaign_id=job_id)
    page = admin_client.get(f"{JOBS}{job_id}/change/").content.decode()
    assert "Paused automatically" in page and f"{JOBS}{job_id}/resume/" in page
    assert (
        "check the rows that bounced"
        in admin_client.get(f"{JOBS}{job_id}/resume/").content.decode()
    )
    admin_client.post(f"{JOBS}{job_id}/resume/")
    job = Campaign.objects.get(pk=job_id)
    assert (job.status, job.status_reason) == ("sending", "")


@pytest.mark.django_db
def test_the_proxy_permissions_decide_who_sees_and_who_acts(sends):
    _, job_id, stream_id = sends
    nobody = _staff("view_campaign")
    assert nobody.get(JOBS).status_code == 403
    assert nobody.get(STREAMS).status_code == 403
    assert nobody.post(f"{JOBS}{job_id}/cancel/").status_code == 403
    viewer = _staff("view_bulkjob", "view_transactionalstream")
    assert viewer.get(STREAMS).status_code == 200
    page = viewer.get(f"{JOBS}{job_id}/change/").content.decode()
    assert f"{JOBS}{job_id}/cancel/" not in page
    assert viewer.post(f"{JOBS}{job_id}/cancel/").status_code == 403
    actor = _staff("view_bulkjob", "change_bulkjob")
    assert actor.post(f"{JOBS}{job_id}/cancel/").status_code == 302
    assert Campaign.objects.get(pk=job_id).status == "cancelled"
    assert actor.get(f"{JOBS}{job_id}/nonsense/").status_code in (302, 404)  # no such page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_cancelling_a_job_in_the_browser_asks_first(page, live_server, sends):
    _, job_id, _ = sends
    page.goto(f"{live_server.url}{JOBS}")
    page.click(f"a[href='{JOBS}{job_id}/change/']")
    page.click("a.job-action:has-text('Cancel')")
    assert "cannot be undone" in page.inner_text("#content-main")
    assert Campaign.objects.get(pk=job_id).status == "sending"
    page.click("#job-action-confirm")
    assert "Cancel: done." in page.inner_text(".messagelist")
    assert Campaign.objects.get(pk=job_id).status == "cancelled"
    assert page.locator("a.job-action").count() == 0  # nothing left to do to it
