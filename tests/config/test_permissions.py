"""Who may do what in the admin, as Django's own views decide it: each staff role against each
admin page and action that reads contacts' data or changes something."""

from datetime import UTC, datetime

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client

from campaigns.models import Campaign, ImportJob
from tests.admin_helpers import EXPORT_URL, IMPORT_URL
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    ContactListFactory,
    PendingEspEventFactory,
    TemplateFactory,
)
from tests.review_helpers import confirm_schedule

pytestmark = pytest.mark.django_db

ROLES = {
    "anonymous": None,
    "staff": [],
    "view contact": ["campaigns.view_contact"],
    "view template": ["templates_app.view_template"],
    "view campaign": ["campaigns.view_campaign"],
    "change campaign": ["campaigns.view_campaign", "campaigns.change_campaign"],
    "add/change contact": ["campaigns.add_contact", "campaigns.change_contact"],
    "every permission but superuser": "all",
    "superuser": "superuser",
}
ALL_PERMS = {"every permission but superuser", "superuser"}


def _client(role: str) -> Client:
    client = Client()
    perms = ROLES[role]
    if perms is None:
        return client
    user = User.objects.create_user(
        username=role.replace(" ", "_").replace("/", "_"), password="x", is_staff=True,
        is_superuser=perms == "superuser",
    )  # fmt: skip
    if perms == "all":
        user.user_permissions.set(Permission.objects.all())
    elif isinstance(perms, list):
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
    client.force_login(user)
    return client


@pytest.fixture
def world():
    contact = ContactFactory(first_name="Secretname")
    contact_list = ContactListFactory()
    contact_list.contacts.add(contact)
    template = TemplateFactory(subject="Hi {{ first_name }}")
    campaign = CampaignFactory(contact_list=contact_list, template=template)
    pending = PendingEspEventFactory(esp_event_id="e-1", message_id="m-1", source="sns")
    job = ImportJob.objects.create(
        data=b"email\nada@example.com\n", encoding="UTF-8", delimiter=",",
        mapping=[{"to": "email", "name": ""}], status=ImportJob.Status.CHECKED, total_rows=1,
    )  # fmt: skip
    return {"contact": contact, "template": template, "campaign": campaign, "pending": pending,
            "job": job}  # fmt: skip


# (method, url, allowed roles): each allowed role gets 200 (or the 302 back to its page
# that the action answers with), each other staff role 403, an anonymous visitor the login.
CASES = {
    "contact import page": ("get", lambda w: IMPORT_URL,
                            {"add/change contact"} | ALL_PERMS),
    "contact import upload": ("post", lambda w: IMPORT_URL,
                              {"add/change contact"} | ALL_PERMS),
    "contact import job": ("get", lambda w: f"{IMPORT_URL}{w['job'].pk}/",
                           {"add/change contact"} | ALL_PERMS),
    "contact import progress": ("get", lambda w: f"{IMPORT_URL}{w['job'].pk}/progress.json",
                                {"add/change contact"} | ALL_PERMS),
    "contact import errors.csv": ("get", lambda w: f"{IMPORT_URL}{w['job'].pk}/errors.csv",
                                  {"add/change contact"} | ALL_PERMS),
    "contact import start": ("post", lambda w: f"{IMPORT_URL}{w['job'].pk}/start/",
                             {"add/change contact"} | ALL_PERMS),
    "contact export page": ("get", lambda w: EXPORT_URL,
                            {"view contact", "add/change contact"} | ALL_PERMS),
    "contact export download": ("post", lambda w: EXPORT_URL,
                                {"view contact", "add/change contact"} | ALL_PERMS),
    "template preview": ("get", lambda w: f"/admin/templates_app/template/{w['template'].pk}"
                         "/preview/", {"view template"} | ALL_PERMS),
    "template preview ?contact=id": ("get", lambda w: "/admin/templates_app/template/"
                                     f"{w['template'].pk}/preview/?contact={w['contact'].pk}",
                                     ALL_PERMS),
    "template preview ?contact=email": ("get", lambda w: "/admin/templates_app/template/"
                                        f"{w['template'].pk}/preview/?contact="
                                        f"{w['contact'].email}", ALL_PERMS),
    "campaign report.csv": ("get", lambda w: f"/admin/campaigns/campaign/{w['campaign'].pk}"
                            "/report.csv", {"view campaign", "change campaign"} | ALL_PERMS),
    "campaign recipients.csv": ("get", lambda w: "/admin/campaigns/campaign/"
                                f"{w['campaign'].pk}/recipients.csv", ALL_PERMS),
    **{
        f"campaign action {action}": ("post", lambda w, action=action: "/admin/campaigns/"
                                      f"campaign/{w['campaign'].pk}/action/{action}/",
                                      {"change campaign"} | ALL_PERMS)
        for action in ("unschedule", "pause", "resume", "cancel")
    },
    "campaign review": ("get", lambda w: f"/admin/campaigns/campaign/{w['campaign'].pk}"
                        "/review/", {"change campaign"} | ALL_PERMS),
    "campaign review confirm": ("post", lambda w: f"/admin/campaigns/campaign/"
                                f"{w['campaign'].pk}/review/", {"change campaign"} | ALL_PERMS),
    "campaign link checks": ("get", lambda w: f"/admin/campaigns/campaign/{w['campaign'].pk}"
                             "/links/", {"change campaign"} | ALL_PERMS),
    "campaign schedule": ("post", lambda w: f"/admin/campaigns/campaign/{w['campaign'].pk}"
                          "/schedule/", {"change campaign"} | ALL_PERMS),
    "beat periodic tasks": ("get", lambda w: "/admin/django_celery_beat/periodictask/",
                            {"superuser"}),
    "beat add periodic task": ("get", lambda w: "/admin/django_celery_beat/periodictask/add/",
                               {"superuser"}),
    "beat intervals": ("get", lambda w: "/admin/django_celery_beat/intervalschedule/",
                       {"superuser"}),
    "raw events": ("get", lambda w: "/admin/tracking/event/", {"superuser"}),
    "pending SES events": ("get", lambda w: "/admin/tracking/pendingespevent/", {"superuser"}),
    "pending SES event page": ("get", lambda w: "/admin/tracking/pendingespevent/"
                               f"{w['pending'].pk}/change/", {"superuser"}),
    "retry_now action": ("post", lambda w: "/admin/tracking/pendingespevent/",
                         {"superuser"}),
}  # fmt: skip

POST_DATA = {
    "contact export download": {"format": "0", "resource": "0", "contactresource_email": "on"},
    "campaign schedule": {"send_at": "2999-01-01T09:00", "time_zone": "UTC"},
    "campaign review confirm": {"send_at": "2999-01-01T09:00:00+00:00", "recipients": "-1"},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES)
def test_permission_matrix(world, role, case):
    method, url, allowed = CASES[case]
    url = url(world)
    data = POST_DATA.get(case, {})
    if case == "retry_now action":
        data = {"action": "retry_now", "_selected_action": [world["pending"].pk]}
    response = getattr(_client(role), method)(url, data)

    if role == "anonymous":
        assert response.status_code == 302 and "/admin/login/" in response["Location"], case
        return
    if role not in allowed:
        assert response.status_code == 403, (case, role, response.status_code)
        world["campaign"].refresh_from_db()
        assert world["campaign"].status == Campaign.Status.DRAFT  # nothing was done
        return
    expected = (
        302
        if case.startswith(
            ("campaign action", "campaign schedule", "retry_now", "contact import start")
        )
        else 200
    )
    assert response.status_code == expected, (case, role, response.status_code)
    if case == "retry_now action":
        assert "Recorded 0, already recorded 0" in _messages(response)


def _messages(response) -> str:
    return " ".join(str(m) for m in response.wsgi_request._messages)


def test_a_template_viewer_previews_without_any_contacts_data(world):
    page = _client("view template").get(
        f"/admin/templates_app/template/{world['template'].pk}/preview/"
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert "Secretname" not in text and world["contact"].email not in text
    assert "you may not view contacts" in text
    both = _client("superuser").get(
        f"/admin/templates_app/template/{world['template'].pk}/preview/"
    )
    assert "Hi Secretname" in both.content.decode()


def test_the_campaign_page_offers_only_what_the_user_may_do(world):
    url = f"/admin/campaigns/campaign/{world['campaign'].pk}/change/"
    viewer = _client("view campaign").get(url).content.decode()
    assert "recipients.csv" not in viewer and "report.csv" in viewer
    assert "Send now" not in viewer and "campaign-schedule-form" not in viewer
    changer = _client("superuser").get(url).content.decode()
    assert "recipients.csv" in changer and "Send now" in changer


def test_a_get_to_an_action_is_refused(world):
    response = _client("superuser").get(
        f"/admin/campaigns/campaign/{world['campaign'].pk}/action/cancel/"
    )
    assert response.status_code == 405
    world["campaign"].refresh_from_db()
    assert world["campaign"].status == Campaign.Status.DRAFT


def test_campaign_actions_land_in_the_admin_log(world, admin_client, admin_user):
    campaign = world["campaign"]
    url = f"/admin/campaigns/campaign/{campaign.pk}"
    confirm_schedule(admin_client, campaign, datetime(2999, 1, 1, 9, tzinfo=UTC))
    admin_client.post(f"{url}/action/unschedule/")
    admin_client.post(f"{url}/action/cancel/")
    admin_client.post(f"{url}/action/cancel/")  # refused (already cancelled): not logged

    entries = LogEntry.objects.filter(object_id=str(campaign.pk)).order_by("id")
    assert [(e.user_id, e.action_flag) for e in entries] == [(admin_user.pk, CHANGE)] * 3
    messages = [e.get_change_message() for e in entries]
    assert messages[0].startswith("Scheduled for 2999-01-01T09:00:00")
    assert messages[1:] == ["Unschedule", "Cancel"]
