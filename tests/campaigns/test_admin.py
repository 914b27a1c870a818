"""The marketer's path through the admin: import, template, preview, send."""

import html
import re
from datetime import UTC, datetime

import pytest

from campaigns.models import Campaign, Contact, ImportJob, Notification
from templates_app.models import Template
from tests.admin_helpers import check, import_file, start, upload
from tests.factories import CampaignFactory, ContactListFactory, TemplateFactory, list_with_contacts
from tests.review_helpers import confirm_schedule, confirm_send_now, review_url

pytestmark = pytest.mark.django_db


def test_csv_import_checks_then_imports_into_a_list(admin_client, eager_celery):
    contact_list = ContactListFactory(name="Newsletter")
    csv = (
        "email,first_name,last_name,City,Favourite Colour\n"
        " Ada@Example.COM ,Ada,Lovelace,London,green\n"
        "grace@example.com,Grace,Hopper,,blue\n"
    )
    job = ImportJob.objects.get(pk=_upload_job(admin_client, csv))
    check(admin_client, job, contact_list=contact_list.pk)
    job.refresh_from_db()
    assert (job.status, job.new_count) == (ImportJob.Status.CHECKED, 2)
    assert not Contact.objects.exists()  # the check wrote nothing

    assert start(admin_client, job).status_code == 302
    ada = Contact.objects.get(email="ada@example.com")
    assert (ada.first_name, ada.attributes) == (
        "Ada",
        {"city": "London", "favourite_colour": "green"},
    )
    assert Contact.objects.get(email="grace@example.com").attributes == {"favourite_colour": "blue"}
    assert set(contact_list.contacts.values_list("email", flat=True)) == {
        "ada@example.com",
        "grace@example.com",
    }


def test_csv_import_updates_existing_contacts_instead_of_duplicating(admin_client, eager_celery):
    Contact.objects.create(email="ada@example.com", first_name="Old")
    import_file(admin_client, "email,first_name\nADA@example.com,Ada\n")
    assert list(Contact.objects.values_list("email", "first_name")) == [("ada@example.com", "Ada")]


def _upload_job(client, content: str) -> int:
    response = upload(client, content)
    assert response.status_code == 302
    return int(response["Location"].rstrip("/").rsplit("/", 1)[1])


def test_template_that_does_not_parse_is_refused_with_line_and_reason(admin_client):
    response = admin_client.post(
        "/admin/templates_app/template/add/",
        {
            "name": "Broken",
            "subject": "Hello",
            "html": "<p>Hi</p>\n{% if vip %}\n<p>VIP</p>\n",
            "text": "",
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Line 2: This does not parse: " in page
    assert not Template.objects.exists()


def test_template_preview_renders_for_a_real_contact(admin_client):
    template = TemplateFactory(
        subject='Hi {{ first_name | default: "there" }}',
        html="<p>{% if city %}From {{ city }}{% else %}From nowhere{% endif %}</p>"
        "<script>alert(1)</script>",
    )
    contact = Contact.objects.create(
        email="ada@example.com", first_name="Ada", attributes={"city": "London"}
    )
    nameless = Contact.objects.create(email="anon@example.com")

    page = admin_client.get(
        f"/admin/templates_app/template/{template.pk}/preview/?contact={contact.pk}"
    ).content.decode()
    assert '<p class="preview-subject">Hi Ada</p>' in page
    assert "From London" in page
    assert '<iframe class="preview-html" sandbox srcdoc=' in page  # no scripts from the HTML

    page = admin_client.get(
        f"/admin/templates_app/template/{template.pk}/preview/?contact={nameless.email}"
    ).content.decode()
    assert '<p class="preview-subject">Hi there</p>' in page
    assert "From nowhere" in page


def test_template_cannot_reach_server_objects(admin_client, settings):
    for source in ["{{ settings.SECRET_KEY }}", "{{ __class__ }}", "{% load static %}"]:
        response = admin_client.post(
            "/admin/templates_app/template/add/",
            {"name": "Probe", "subject": "Hi", "html": source, "text": ""},
        )
        assert "This does not parse" in response.content.decode(), source
    template = TemplateFactory(html="<p>{{ SECRET_KEY }}{{ settings }}{{ request }}</p>")
    page = admin_client.get(f"/admin/templates_app/template/{template.pk}/preview/").content
    assert settings.SECRET_KEY.encode() not in page


def test_send_now_sends_the_campaign(
    admin_client, eager_celery, ses, django_capture_on_commit_callbacks
):
    campaign = CampaignFactory(contact_list=list_with_contacts(60))
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "Send now" in page
    review = admin_client.get(review_url(campaign)).content.decode()
    assert "Send to 60 recipients now" in review

    with django_capture_on_commit_callbacks(execute=True):
        response = confirm_send_now(admin_client, campaign)

    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENT
    assert Notification.objects.filter(campaign=campaign, status="sent").count() == 60
    assert ses.stats()["distinct_recipients"] == 60
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert re.search(r"<th>Sent</th><td>60</td>", page)


def test_send_now_with_an_empty_list_is_refused_with_a_reason(admin_client):
    campaign = CampaignFactory()
    page = admin_client.get(review_url(campaign)).content.decode()
    assert "has no contact to send to" in page and "disabled" in page
    response = confirm_send_now(admin_client, campaign)
    assert "has no contact to send to" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_schedule_then_beat_starts_it_when_due(
    admin_client, eager_celery, ses, django_capture_on_commit_callbacks
):
    from campaigns.services import campaigns_start_due

    campaign = CampaignFactory(contact_list=list_with_contacts(3))
    with django_capture_on_commit_callbacks(execute=True) as enqueued:
        form = admin_client.post(
            f"/admin/campaigns/campaign/{campaign.pk}/schedule/",
            {"send_at": "2999-01-01T09:00", "time_zone": "UTC"},
        )
        assert form.status_code == 302 and "/review/?send_at=2999-01-01T09" in form["Location"]
        assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.DRAFT  # not yet
        confirm_schedule(admin_client, campaign, datetime(2999, 1, 1, 9, tzinfo=UTC))
        assert campaigns_start_due() == []
    assert enqueued == []
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.scheduled_at.year == 2999

    Campaign.objects.filter(pk=campaign.pk).update(scheduled_at="2000-01-01T00:00Z")
    with django_capture_on_commit_callbacks(execute=True):
        assert campaigns_start_due() == [campaign.pk]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENT
    assert ses.stats()["distinct_recipients"] == 3


def test_a_time_that_has_passed_is_refused_and_nothing_is_sent(
    admin_client, django_capture_on_commit_callbacks
):
    campaign = CampaignFactory(contact_list=list_with_contacts(3))
    response = admin_client.post(
        f"/admin/campaigns/campaign/{campaign.pk}/schedule/",
        {"send_at": "2000-01-01T09:00", "time_zone": "UTC"},
        follow=True,
    )
    page = response.content.decode()
    assert "That time has passed" in page and "disabled" in page
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        refused = confirm_schedule(admin_client, campaign, datetime(2000, 1, 1, 9, tzinfo=UTC))
    assert "That time has passed" in refused.content.decode()
    assert enqueued == []
    campaign.refresh_from_db()
    assert (campaign.status, campaign.scheduled_at) == (Campaign.Status.DRAFT, None)


def test_the_campaign_form_has_no_schedule_field_that_nothing_acts_on(admin_client):
    """Scheduling is the Schedule control's alone: a time saved through the form would show in
    the list while the campaign stayed a draft that never sends."""
    campaign = CampaignFactory(contact_list=list_with_contacts(1))
    url = f"/admin/campaigns/campaign/{campaign.pk}/change/"
    assert 'name="scheduled_at' not in admin_client.get(url).content.decode()
    response = admin_client.post(url, {
        "name": "Renamed", "template": campaign.template_id,
        "contact_list": campaign.contact_list_id, "from_email": "", "send_path": "bulk",
        "scheduled_at_0": "2999-01-01", "scheduled_at_1": "09:00",
        "links-TOTAL_FORMS": "0", "links-INITIAL_FORMS": "0",
    })  # fmt: skip
    assert response.status_code == 302  # saved
    campaign.refresh_from_db()
    assert campaign.name == "Renamed"
    assert (campaign.status, campaign.scheduled_at) == (Campaign.Status.DRAFT, None)


def test_adding_a_contact_by_hand_normalizes_and_refuses_duplicates(admin_client):
    add = "/admin/campaigns/contact/add/"
    form = {"email": " Ada@Example.COM ", "first_name": "Ada", "last_name": "", "attributes": "{}",
            "status": "active"}  # fmt: skip
    assert admin_client.post(add, form).status_code == 302
    assert Contact.objects.get().email == "ada@example.com"
    again = admin_client.post(add, {**form, "email": "ADA@example.com"})
    assert again.status_code == 200
    assert "Contact with this Email already exists." in again.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/admin/campaigns/contact/", "/admin/campaigns/contact/add/",
        "/admin/campaigns/contactlist/", "/admin/campaigns/contactlist/add/",
        "/admin/campaigns/campaign/", "/admin/campaigns/campaign/add/",
        "/admin/campaigns/notification/", "/admin/templates_app/template/",
        "/admin/templates_app/template/add/", "/admin/tracking/event/",
        "/admin/campaigns/contact/export/",
    ],
)  # fmt: skip
def test_admin_pages_render(admin_client, url):
    list_with_contacts(2)
    assert admin_client.get(url).status_code == 200


ODD_SEARCHES = [
    "foo@", "@", "a@b@c", "@@", "user@☃.com", '"john..doe"@example.com', "x\x00@example.com",
    "\x00", "²", "٣", "9" * 30, "-1", "%", "_", "'; select 1; --", "\r\n", " " * 3, "x" * 5000,
]  # fmt: skip


def test_odd_searches_never_fail(admin_client):
    list_with_contacts(2)
    for url in (
        "/admin/campaigns/contact/", "/admin/campaigns/contactlist/",
        "/admin/campaigns/campaign/", "/admin/campaigns/notification/",
        "/admin/templates_app/template/", "/admin/tracking/event/",
        "/admin/tracking/pendingespevent/", "/admin/django_celery_beat/periodictask/",
    ):  # fmt: skip
        for term in ODD_SEARCHES:
            assert admin_client.get(url, {"q": term}).status_code == 200, (url, repr(term))
        assert admin_client.get(url, QUERY_STRING="q=%ff%fe%00").status_code == 200, url


@pytest.mark.parametrize(
    ("from_email", "message"),
    [
        ("News <news@example.com>\r\nBcc: all@example.com", "must be on one line"),
        ("news@example.com, other@example.com", "This is not one sender address"),
        ("News, Inc. <news@example.com>", "This is not one sender address"),
        ("News <news@exam ple.com>", "This is not one sender address"),
        ("news @ example.com", "reads as news@example.com"),
        ("News <news@☃.com>", "The part after the @-sign is invalid"),
        ("Ünï <ü@example.com>", "Internationalized characters before the @-sign"),
        ("news@localhost", "It should have a period"),
    ],
)
def test_a_from_address_the_sender_cannot_use_is_refused(admin_client, from_email, message):
    template, contact_list = TemplateFactory(), ContactListFactory()
    form = {"name": "C", "template": template.pk, "contact_list": contact_list.pk,
            "from_email": from_email, "send_path": "bulk",
            "links-TOTAL_FORMS": "0", "links-INITIAL_FORMS": "0"}  # fmt: skip
    response = admin_client.post("/admin/campaigns/campaign/add/", form)
    assert response.status_code == 200
    assert message in html.unescape(response.content.decode())
    assert not Campaign.objects.exists()
    form["from_email"] = '"News, Inc." <news@example.com>'
    assert admin_client.post("/admin/campaigns/campaign/add/", form).status_code == 302
