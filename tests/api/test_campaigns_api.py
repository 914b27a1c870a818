"""/api/v1/campaigns: the admin's campaign over REST. Fields checked by the admin's form,
every control through the guarded services (409 invalid_transition for a move the state
machine refuses, naming the status), only campaigns (not the API's streams and jobs), and a
campaign scheduled over the API sent by a real worker to the local SES endpoint."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.admin.campaigns import CampaignAdmin
from campaigns.forms import CampaignForm
from campaigns.models import Campaign, Contact, Membership, Notification
from campaigns.services import (
    CampaignAudienceChanged,
    campaign_send_now,
    campaign_transition,
    campaigns_start_due,
)
from tests.api.helpers import api_client
from tests.conftest import wait_for
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    ContactListFactory,
    TemplateFactory,
    list_with_contacts,
)
from tests.review_helpers import confirm_send_now, review_url

pytestmark = pytest.mark.django_db

C = Campaign.Status


@pytest.fixture
def client():
    return api_client(scopes=("campaigns:read", "campaigns:write"))


@pytest.fixture
def draft(client):
    """A draft made over the API, to a list of 3, with a slug-named template."""
    TemplateFactory(slug="news")
    contact_list = list_with_contacts(3)
    answer = client.post(
        "/api/v1/campaigns",
        {"name": "News", "template": "news", "list": contact_list.pk},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    return Campaign.objects.get(pk=answer.json()["id"])


def act(client, campaign, action, body=None):
    return client.post(f"/api/v1/campaigns/{campaign.pk}/{action}", body or {}, format="json")


def status_of(campaign) -> str:
    return Campaign.objects.values_list("status", flat=True).get(pk=campaign.pk)


def to_sending(campaign) -> None:
    for to in (C.SCHEDULED, C.SENDING):
        assert campaign_transition(
            campaign_id=campaign.pk, from_statuses={status_of(campaign)}, to=to
        )


def test_create_read_list_and_update_a_draft(client, draft):
    body = client.get(f"/api/v1/campaigns/{draft.pk}").json()
    assert (body["name"], body["status"], body["list"], body["send_path"]) == (
        "News", "draft", draft.contact_list_id, "bulk",
    )  # fmt: skip
    assert (body["test"], body["send_at"], body["from_email"]) == (False, None, "")
    listed = client.get("/api/v1/campaigns?status=draft").json()
    assert [c["id"] for c in listed["results"]] == [draft.pk]
    assert client.get("/api/v1/campaigns?status=sent").json()["results"] == []

    other = ContactListFactory()
    changed = client.patch(
        f"/api/v1/campaigns/{draft.pk}",
        {"list": other.pk, "from_email": "News <news@example.com>"},
        format="json",
    )
    assert changed.status_code == 200, changed.content
    draft.refresh_from_db()
    assert (draft.contact_list_id, draft.from_email, draft.name) == (
        other.pk, "News <news@example.com>", "News",
    )  # fmt: skip


def test_the_api_validates_with_the_admins_form():
    assert issubclass(CampaignAdmin.form, CampaignForm)


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"from_email": "News <news@example.com>\r\nBcc: x@evil.example"}, "from_email", None),
        ({"from_email": "not an address"}, "from_email", None),
        ({"name": ""}, "name", "required"),
        ({"name": "x" * 201}, "name", "max_length"),
        ({"list": 10**15}, "list", "invalid_choice"),
        ({"send_path": "carrier-pigeon"}, "send_path", "invalid_choice"),
    ],
)
def test_a_campaign_the_admin_form_refuses_is_refused_with_its_reason(client, fields, field, code):
    template, contact_list = TemplateFactory(), ContactListFactory()
    base = {"name": "N", "template": template.pk, "list": contact_list.pk}
    form = CampaignForm(
        data={
            "name": "N", "template": template.pk, "contact_list": contact_list.pk,
            "send_path": "bulk",
            **{("contact_list" if k == "list" else k): v for k, v in fields.items()},
        }
    )  # fmt: skip
    assert not form.is_valid()
    admin_messages = [m for errors in form.errors.values() for m in errors]
    answer = client.post("/api/v1/campaigns", {**base, **fields}, format="json")
    assert answer.status_code == 422, answer.content
    errors = answer.json()["errors"]
    assert [e["message"] for e in errors] == admin_messages
    assert errors[0]["field"] == field
    if code:
        assert errors[0]["code"] == code
    assert not Campaign.objects.exists()


def test_a_missing_template_list_or_unknown_template_is_refused(client):
    contact_list = ContactListFactory()
    answer = client.post("/api/v1/campaigns", {"name": "N", "template": "nope"}, format="json")
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["code"] == "template_not_found"
    answer = client.post("/api/v1/campaigns", {"name": "N", "list": contact_list.pk}, format="json")
    assert {(e["field"], e["code"]) for e in answer.json()["errors"]} == {("template", "required")}
    answer = client.post(
        "/api/v1/campaigns", {"name": "N", "template": TemplateFactory().pk}, format="json"
    )
    assert {(e["field"], e["code"]) for e in answer.json()["errors"]} == {("list", "required")}


def test_only_a_draft_can_be_changed(client, draft):
    future = (timezone.now() + timedelta(days=1)).isoformat()
    assert act(client, draft, "schedule", {"send_at": future}).status_code == 200
    answer = client.patch(f"/api/v1/campaigns/{draft.pk}", {"name": "Late"}, format="json")
    assert answer.status_code == 409
    assert answer.json()["errors"][0]["code"] == "not_draft"
    assert Campaign.objects.get(pk=draft.pk).name == "News"


def test_schedule_unschedule_and_cancel(client, draft):
    when = timezone.now() + timedelta(days=1)
    answer = act(client, draft, "schedule", {"send_at": when.isoformat()})
    assert answer.status_code == 200, answer.content
    assert answer.json()["status"] == "scheduled"
    draft.refresh_from_db()
    assert draft.scheduled_at == when
    again = act(client, draft, "schedule", {"send_at": when.isoformat()})
    assert again.status_code == 409
    error = again.json()["errors"][0]
    assert error["code"] == "invalid_transition" and "scheduled" in error["message"]

    assert act(client, draft, "unschedule").json()["status"] == "draft"
    assert Campaign.objects.get(pk=draft.pk).scheduled_at is None
    refused = act(client, draft, "unschedule")
    assert refused.status_code == 409 and "draft" in refused.json()["errors"][0]["message"]

    assert act(client, draft, "cancel").json()["status"] == "cancelled"
    for action in ("cancel", "send", "pause", "resume", "unschedule"):
        refused = act(client, draft, action)
        assert refused.status_code == 409, action
        error = refused.json()["errors"][0]
        assert error["code"] == "invalid_transition" and "cancelled" in error["message"], error
    assert status_of(draft) == C.CANCELLED


def test_pause_and_resume_a_sending_campaign(client, draft):
    refused = act(client, draft, "pause")
    assert refused.status_code == 409 and "draft" in refused.json()["errors"][0]["message"]
    assert act(client, draft, "resume").status_code == 409
    to_sending(draft)
    assert act(client, draft, "pause").json()["status"] == "paused"
    assert act(client, draft, "pause").status_code == 409
    assert act(client, draft, "resume").json()["status"] == "sending"
    assert act(client, draft, "send").status_code == 409


def test_schedule_at_each_contacts_local_time(client, draft):
    wall = (timezone.now() + timedelta(days=2)).replace(tzinfo=None, second=0, microsecond=0)
    answer = act(
        client,
        draft,
        "schedule",
        {"local_time": wall.isoformat(timespec="minutes"), "time_zone": "Asia/Tokyo"},
    )
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["local_time"] == wall.strftime("%Y-%m-%dT%H:%M")
    assert body["local_time_zone"] == "Asia/Tokyo"
    # The contacts have no zone: they get it at the wall time in the fallback zone.
    assert Campaign.objects.get(pk=draft.pk).scheduled_at == timezone.make_aware(
        wall, timezone.get_fixed_timezone(9 * 60)
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "required"),
        ({"send_at": "2030-01-01T09:00:00Z", "local_time": "2030-01-01T09:00"}, 400, "required"),
        ({"send_at": "yesterday"}, 400, "invalid"),
        ({"send_at": "9999-12-31T23:59:59-05:00"}, 400, "overflow"),
        ({"local_time": "2030-01-01T09:00+01:00"}, 400, "invalid"),
        ({"local_time": "2030-13-01T09:00"}, 400, "invalid"),
        ({"local_time": "2030-01-01T09:00", "time_zone": "Mars/Olympus"}, 400, "invalid_time_zone"),
        ({"local_time": "2030-01-01T09:00", "time_zone": "a\x00b"}, 400, None),
        ({"send_at": "2030-01-01T09:00:00Z", "time_zone": "Europe/Paris"}, 400, "invalid"),
        ({"send_at": "2001-01-01T09:00:00Z"}, 422, "campaign_not_sendable"),
        ({"local_time": "2001-01-01T09:00"}, 422, "campaign_not_sendable"),
        ({"local_time": "9999-12-31T23:59", "time_zone": "Pacific/Kiritimati"}, None, None),
        ({"local_time": "0001-01-01T00:00", "time_zone": "Asia/Tokyo"}, 422, "invalid_time"),
        ({"send_at": "2030-01-01T09:00:00Z", "extra": 1}, 400, "unknown_field"),
    ],
)
def test_a_schedule_the_rules_refuse_is_a_4xx(client, draft, body, status, code):
    answer = act(client, draft, "schedule", body)
    if status is None:  # the far future is a time like any other, or refused: never a 500
        assert answer.status_code in (200, 422), answer.content
        return
    assert answer.status_code == status, answer.content
    if code:
        assert answer.json()["errors"][0]["code"] == code, answer.json()
    assert status_of(draft) == C.DRAFT


def test_send_now_refuses_an_empty_list_with_the_services_reason(client):
    campaign = CampaignFactory()
    answer = act(client, campaign, "send")
    assert answer.status_code == 422
    error = answer.json()["errors"][0]
    assert error["code"] == "campaign_not_sendable" and "no active contacts" in error["message"]
    assert status_of(campaign) == C.DRAFT


def test_send_now_sends(client, draft, eager_celery, ses, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        answer = act(client, draft, "send")
    assert answer.status_code == 200, answer.content
    assert status_of(draft) == C.SENT
    assert Notification.objects.filter(campaign=draft, status="sent").count() == 3
    assert ses.stats()["distinct_recipients"] == 3


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("send", {}),
        ("schedule", {"send_at": "2030-01-31T09:00:00+01:00"}),
        ("schedule", {"local_time": "2030-01-31T09:00", "time_zone": "Asia/Tokyo"}),
    ],
)
def test_expected_recipients_must_be_the_audience_now(client, draft, action, body):
    """As the admin's review button: the count confirmed, or a 409 naming the count now, and
    nothing changed (one rule: the guarded services check it for both)."""
    member = Membership.objects.filter(contact_list=draft.contact_list).first()
    Contact.objects.filter(pk=member.contact_id).update(status=Contact.Status.UNSUBSCRIBED)
    refused = act(client, draft, action, {**body, "expected_recipients": 3})
    assert refused.status_code == 409, refused.content
    assert refused.json() == {
        "errors": [
            {
                "code": "audience_changed",
                "field": "expected_recipients",
                "message": "The campaign's list has 2 recipients now, not 3: nothing was "
                "changed. Check it, and send again with expected_recipients set to the new "
                "count.",
                "recipients": 2,
            }
        ]
    }
    assert status_of(draft) == C.DRAFT
    assert Campaign.objects.get(pk=draft.pk).scheduled_at is None
    done = act(client, draft, action, {**body, "expected_recipients": 2})
    assert done.status_code == 200, done.content
    assert status_of(draft) == C.SCHEDULED


def test_the_admins_confirmation_and_the_api_refuse_alike(client, draft, admin_client):
    """The same service refuses both: the admin's button for a count that is no longer the
    audience's, and the API's expected_recipients."""
    ContactFactory.create_batch(2)  # not members: the audience stays 3
    Membership.objects.create(contact_list=draft.contact_list, contact=ContactFactory())
    page = admin_client.post(review_url(draft), {"send_at": "", "recipients": "3"})
    assert "The audience changed since the review (4 recipients now)" in page.content.decode()
    for odd in ("", "4.0", "٤", "9" * 5000):
        page = admin_client.post(review_url(draft), {"send_at": "", "recipients": odd})
        assert page.status_code == 200 and "The audience changed" in page.content.decode()
    assert act(client, draft, "send", {"expected_recipients": 3}).status_code == 409
    assert status_of(draft) == C.DRAFT
    with pytest.raises(CampaignAudienceChanged) as refused:
        campaign_send_now(campaign=draft, expected_recipients=5)
    assert (refused.value.expected, refused.value.recipients) == (5, 4)
    assert status_of(draft) == C.DRAFT
    confirm_send_now(admin_client, draft)  # the count the review shows: sent
    assert status_of(draft) == C.SCHEDULED


def test_only_campaigns_are_campaigns_here(client, draft):
    job = CampaignFactory(kind=Campaign.Kind.JOB, contact_list=None)
    stream = CampaignFactory(
        kind=Campaign.Kind.TRANSACTIONAL, contact_list=None, stream_key="s", status=C.SENDING
    )
    assert [c["id"] for c in client.get("/api/v1/campaigns").json()["results"]] == [draft.pk]
    for other in (job, stream):
        assert client.get(f"/api/v1/campaigns/{other.pk}").status_code == 404
        assert act(client, other, "pause").status_code == 404
        assert act(client, other, "cancel").status_code == 404
        assert client.get(f"/api/v1/campaigns/{other.pk}/report").status_code == 404
    assert status_of(stream) == C.SENDING


def test_a_test_keys_campaigns_are_its_own_and_simulated(client):
    tester = api_client(scopes=("campaigns:read", "campaigns:write"), test=True)
    template, contact_list = TemplateFactory(), list_with_contacts(1)
    answer = tester.post(
        "/api/v1/campaigns",
        {"name": "T", "template": template.pk, "list": contact_list.pk},
        format="json",
    )
    assert answer.status_code == 201 and answer.json()["test"] is True
    pk = answer.json()["id"]
    assert Campaign.objects.get(pk=pk).test_mode
    assert client.get(f"/api/v1/campaigns/{pk}").status_code == 404  # a live key's view
    live = CampaignFactory()
    assert tester.get(f"/api/v1/campaigns/{live.pk}").status_code == 404


def test_scopes(client, draft):
    reader = api_client(scopes=("campaigns:read",))
    assert reader.get(f"/api/v1/campaigns/{draft.pk}").status_code == 200
    assert reader.get(f"/api/v1/campaigns/{draft.pk}/report").status_code == 200
    for answer in (
        reader.post("/api/v1/campaigns", {}, format="json"),
        reader.patch(f"/api/v1/campaigns/{draft.pk}", {}, format="json"),
        act(reader, draft, "cancel"),
        act(reader, draft, "schedule", {"send_at": "2030-01-01T00:00:00Z"}),
    ):
        assert answer.status_code == 403
        assert answer.json()["errors"][0]["code"] == "missing_scope"
    assert api_client(scopes=("jobs:read",)).get("/api/v1/campaigns").status_code == 403
    assert client.get(f"/api/v1/campaigns/{draft.pk}/send").status_code == 405
    assert client.delete(f"/api/v1/campaigns/{draft.pk}").status_code == 405
    assert status_of(draft) == C.DRAFT


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/campaigns", {"name": "N", "template": True, "list": 1}),
        ("post", "/api/v1/campaigns", {"name": "N", "template": 1, "list": "x"}),
        ("post", "/api/v1/campaigns", {"name": "N", "template": 1, "list": 2**64}),
        ("post", "/api/v1/campaigns", {"name": "N", "template": 2**64, "list": 1}),
        ("post", "/api/v1/campaigns", {"name": "N", "template": "a\x00b", "list": 1}),
        ("post", "/api/v1/campaigns", {"name": ["N"], "template": 1, "list": 1}),
        ("post", "/api/v1/campaigns", {"name": "a\x00", "template": 1, "list": 1}),
        ("post", "/api/v1/campaigns", []),
        ("patch", "/api/v1/campaigns/{pk}", {"status": "sent"}),
        ("patch", "/api/v1/campaigns/{pk}", {"send_path": 5}),
        ("patch", "/api/v1/campaigns/99999999999999999999", {"name": "x"}),
        ("post", "/api/v1/campaigns/{pk}/send", {"recipients": 3}),
        ("post", "/api/v1/campaigns/{pk}/send", {"expected_recipients": -1}),
        ("post", "/api/v1/campaigns/{pk}/send", {"expected_recipients": "three"}),
        ("post", "/api/v1/campaigns/{pk}/send", {"expected_recipients": 3.5}),
        ("post", "/api/v1/campaigns/{pk}/send", {"expected_recipients": 10**40}),
        ("post", "/api/v1/campaigns/{pk}/send", {"expected_recipients": None}),
        ("post", "/api/v1/campaigns/{pk}/send", {"expected_recipients": 2}),
        ("post", "/api/v1/campaigns/{pk}/cancel", "nope"),
        ("post", "/api/v1/campaigns/9223372036854775808/cancel", {}),
        ("get", "/api/v1/campaigns?status=nope", None),
        ("get", "/api/v1/campaigns?limit=1000", None),
        ("get", "/api/v1/campaigns?cursor=%00", None),
        ("get", "/api/v1/campaigns/{pk}/report?time_zone=..%2F..%2Fetc", None),
        ("get", "/api/v1/campaigns/{pk}/report?time_zone=%00", None),
        ("get", "/api/v1/campaigns/{pk}/report?x=1", None),
    ],
)
def test_hostile_input_is_a_4xx_in_the_error_shape(client, draft, method, path, body):
    path = path.format(pk=draft.pk)
    call = getattr(client, method)
    answer = call(path, body, format="json") if body is not None else call(path)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.content)
    errors = answer.json()["errors"]
    assert errors and all(set(e) >= {"code", "field", "message"} for e in errors)
    assert Campaign.objects.count() == 1 and status_of(draft) == C.DRAFT


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_campaign_scheduled_over_the_api_is_sent_by_a_worker(celery_worker_process, ses):
    client = api_client(scopes=("campaigns:read", "campaigns:write"))
    TemplateFactory(slug="weekly")
    contact_list = list_with_contacts(5)
    made = client.post(
        "/api/v1/campaigns",
        {"name": "Weekly", "template": "weekly", "list": contact_list.pk},
        format="json",
        HTTP_IDEMPOTENCY_KEY="weekly-1",
    )
    assert made.status_code == 201, made.content
    pk = made.json()["id"]
    send_at = timezone.now() + timedelta(seconds=2)
    answer = client.post(
        f"/api/v1/campaigns/{pk}/schedule", {"send_at": send_at.isoformat()}, format="json"
    )
    assert answer.status_code == 200 and answer.json()["status"] == "scheduled"
    assert campaigns_start_due() == []  # not before its time

    def sent():
        campaigns_start_due()  # beat's job, every 10 s in production
        return Campaign.objects.get(pk=pk).status == C.SENT

    wait_for(sent, timeout=90, interval=0.5, message=lambda: celery_worker_process.output()[-3000:])
    assert Notification.objects.filter(campaign_id=pk, status="sent").count() == 5
    assert ses.stats()["distinct_recipients"] == 5
    report = client.get(f"/api/v1/campaigns/{pk}/report").json()
    assert (report["recipients"], report["delivery"]["sent"], report["final"]) == (5, 5, True)
    assert Campaign.objects.get(pk=pk).started_at >= send_at


def test_a_template_named_by_thousands_of_digits_is_not_found(client):
    # int() refuses a string of over 4,300 digits: template_lookup must not ask it.
    messages = api_client(scopes=("messages:send",)).post(
        "/api/v1/messages", {"template": "7" * 5000, "to": "a@example.com"}, format="json"
    )
    assert messages.status_code == 422
    assert messages.json()["errors"][0]["code"] == "template_not_found"
    contact_list = ContactListFactory()
    answer = client.post(
        "/api/v1/campaigns",
        {"name": "N", "template": "1" * 5000, "list": contact_list.pk},
        format="json",
    )
    assert answer.status_code == 422, answer.status_code
    assert answer.json()["errors"][0]["code"] == "template_not_found"


def test_a_staff_session_needs_the_campaign_permissions(draft):
    user = User.objects.create_user("viewer", password="x", is_staff=True)  # noqa: S106
    user.user_permissions.add(Permission.objects.get(codename="view_campaign"))
    session = APIClient()
    session.force_login(user)
    assert session.get(f"/api/v1/campaigns/{draft.pk}/report").status_code == 200
    refused = session.post(f"/api/v1/campaigns/{draft.pk}/cancel", {}, format="json")
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["code"] == "permission_denied"
    user.user_permissions.add(Permission.objects.get(codename="change_campaign"))
    session.force_login(User.objects.get(pk=user.pk))  # permissions are cached per object
    assert (
        session.post(f"/api/v1/campaigns/{draft.pk}/cancel", {}, format="json").json()["status"]
        == "cancelled"
    )


def test_an_idempotent_create_makes_one_campaign(client):
    template, contact_list = TemplateFactory(), ContactListFactory()
    body = {"name": "Once", "template": template.pk, "list": contact_list.pk}
    first = client.post("/api/v1/campaigns", body, format="json", HTTP_IDEMPOTENCY_KEY="c-1")
    again = client.post("/api/v1/campaigns", body, format="json", HTTP_IDEMPOTENCY_KEY="c-1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and Campaign.objects.count() == 1
    other = client.post(
        "/api/v1/campaigns", {**body, "name": "Twice"}, format="json", HTTP_IDEMPOTENCY_KEY="c-1"
    )
    assert other.status_code == 409
