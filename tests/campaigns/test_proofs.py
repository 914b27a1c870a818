"""Test sends ("proofs") from the campaign's and the template's page, against the local SES
endpoint: what arrives is the campaign's message for the chosen contact, by the campaign's
path, marked as a test, and nothing of it is recorded."""

import logging
import socket

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from campaigns.models import Campaign, CampaignCounter, Contact, Notification
from campaigns.preferences import user_preferences
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    TemplateFactory,
    list_with_contacts,
)
from tracking.reports.report import campaign_report

pytestmark = pytest.mark.django_db

HTML = (
    '<p>Hi {{ first_name | default: "there" }} from {{ city | default: "nowhere" }}</p>'
    '<p><a href="https://example.com/offer">Offer</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
)
PROOF_UNSUBSCRIBE = "http://tracking.test/t/u/test-send"


@pytest.fixture
def campaign():
    contact_list = list_with_contacts(3)
    first = contact_list.contacts.order_by("id").first()
    Contact.objects.filter(pk=first.pk).update(first_name="Ada", attributes={"city": "London"})
    template = TemplateFactory(subject="Hello {{ first_name }}", html=HTML, text="Hi")
    return CampaignFactory(contact_list=contact_list, template=template)


def _proof_url(campaign) -> str:
    return f"/admin/campaigns/campaign/{campaign.pk}/test-send/"


def _messages(response) -> str:
    return " ".join(str(m) for m in response.wsgi_request._messages)


def _headers(message) -> dict[str, str]:
    return {h["name"]: h["value"] for h in message["headers"]}


def _nothing_recorded(campaign) -> None:
    assert not Notification.objects.filter(campaign=campaign).exists()
    assert not CampaignCounter.objects.filter(campaign_id=campaign.pk).exists()
    campaign.refresh_from_db()
    assert (campaign.status, campaign.ses_template_name) == (Campaign.Status.DRAFT, "")
    report = campaign_report(campaign_id=campaign.pk)
    assert (report.sent, report.recipients) == (0, 0)


@pytest.mark.parametrize(
    ("path", "api"),
    [(Campaign.SendPath.BULK, "SendBulkEmail"), (Campaign.SendPath.RENDERED, "SendEmail")],
)
def test_a_proof_goes_once_to_each_address_by_the_campaigns_path(
    admin_client, ses, campaign, path, api
):
    Campaign.objects.filter(pk=campaign.pk).update(send_path=path)

    response = admin_client.post(
        _proof_url(campaign), {"addresses": "One@Example.net, two@example.net ,", "contact": ""}
    )

    assert response.status_code == 302
    assert response["Location"].endswith(f"/campaigns/campaign/{campaign.pk}/change/#test-send")
    assert "Test sent: Amazon SES accepted it for 2 addresses." in _messages(response)
    messages = ses.messages()
    assert sorted(m["to"][0] for m in messages) == ["one@example.net", "two@example.net"]
    for message in messages:
        assert message["api"] == api
        assert message["subject"] == "[Test] Hello Ada"  # the list's first member's data
        assert message["from"] == "News <news@example.com>"  # the campaign's sender
        assert "Hi Ada from London" in message["html"]
        # Untracked: the link goes to its page, no pixel; the unsubscribe link names nobody.
        assert 'href="https://example.com/offer"' in message["html"]
        assert "/t/o/" not in message["html"] and "/t/c/" not in message["html"]
        assert f'href="{PROOF_UNSUBSCRIBE}"' in message["html"]
        headers = _headers(message)
        assert headers["List-Unsubscribe"] == f"<{PROOF_UNSUBSCRIBE}>"
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert headers["X-Campaign"] == str(campaign.pk)
        assert message["configuration_set"] in (None, "")
    if api == "SendBulkEmail":
        assert {m["template"] for m in messages} == {messages[0]["template"]}
        assert messages[0]["template"].startswith("mailwright-proof-")
    _nothing_recorded(campaign)


def test_both_paths_give_the_same_proof(admin_client, ses, campaign):
    bodies = []
    for path in (Campaign.SendPath.BULK, Campaign.SendPath.RENDERED):
        ses.reset()
        Campaign.objects.filter(pk=campaign.pk).update(send_path=path)
        admin_client.post(_proof_url(campaign), {"addresses": "one@example.net"})
        [message] = ses.messages()
        bodies.append((message["subject"], message["html"], message["text"]))
    assert bodies[0] == bodies[1]


def test_a_proof_reuses_its_stored_template(admin_client, ses, campaign):
    admin_client.post(_proof_url(campaign), {"addresses": "one@example.net"})
    other = campaign.contact_list.contacts.order_by("id").last()
    admin_client.post(_proof_url(campaign), {"addresses": "one@example.net", "contact": other.pk})
    names = {m["template"] for m in ses.messages()}
    assert len(ses.messages()) == 2 and len(names) == 1


def test_ten_addresses_are_one_bulk_call(admin_client, ses, campaign):
    addresses = [f"p{i}@example.net" for i in range(10)]

    response = admin_client.post(_proof_url(campaign), {"addresses": ",".join(addresses)})

    assert "accepted it for 10 addresses" in _messages(response)
    messages = ses.messages()
    assert sorted(m["to"][0] for m in messages) == sorted(addresses)
    assert ses.stats()["calls"]["SendBulkEmail"] == 1


def test_a_started_campaigns_proof_is_its_frozen_template(admin_client, ses, campaign):
    # Edited after the start: recipients get the snapshot, so the proof shows it too.
    Campaign.objects.filter(pk=campaign.pk).update(
        status=Campaign.Status.SENT,
        template_snapshot={"subject": "Frozen {{ first_name }}", "html": "<p>F</p>", "text": ""},
    )
    campaign.refresh_from_db()

    admin_client.post(_proof_url(campaign), {"addresses": "one@example.net"})

    [message] = ses.messages()
    assert message["subject"] == "[Test] Frozen Ada"
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENT
    assert not Notification.objects.filter(campaign=campaign).exists()


def test_a_proof_is_rendered_for_the_contact_named(admin_client, ses, campaign):
    other = ContactFactory(first_name="<b>Grace</b>", email="grace@example.org")

    for wanted in (str(other.pk), " GRACE@example.org "):
        ses.reset()
        response = admin_client.post(
            _proof_url(campaign), {"addresses": "one@example.net", "contact": wanted}
        )
        assert "accepted it for 1 address." in _messages(response)
        [message] = ses.messages()
        assert message["subject"] == "[Test] Hello <b>Grace</b>"
        assert "Hi &lt;b&gt;Grace&lt;/b&gt; from nowhere" in message["html"]  # escaped in HTML


def test_a_templates_proof_goes_by_the_default_path_and_sender(admin_client, ses, settings):
    ContactFactory(first_name="Ada")
    template = TemplateFactory(subject="Hello {{ first_name }}", html=HTML)

    response = admin_client.post(
        f"/admin/templates_app/template/{template.pk}/test-send/", {"addresses": "one@example.net"}
    )

    assert "Test sent" in _messages(response)
    [message] = ses.messages()
    assert (message["api"], message["subject"]) == ("SendBulkEmail", "[Test] Hello Ada")
    assert message["from"] == settings.DEFAULT_FROM_EMAIL
    assert "X-Campaign" not in _headers(message)
    assert not Notification.objects.exists() and not Campaign.objects.exists()


def test_the_addresses_are_remembered_and_offered_again(admin_client, admin_user, ses, campaign):
    admin_client.post(_proof_url(campaign), {"addresses": "Two@example.net, one@example.net"})

    assert user_preferences(user=admin_user).proof_addresses == [
        "two@example.net",
        "one@example.net",
    ]
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert 'value="two@example.net, one@example.net"' in page
    template_page = admin_client.get(
        f"/admin/templates_app/template/{campaign.template_id}/change/"
    ).content.decode()
    assert 'value="two@example.net, one@example.net"' in template_page
    assert "the way this campaign will be sent" in page
    assert "by default (bulk, from the default sender)" in template_page


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        ("one@example.net\r\nBcc: victim@example.org", "contains a control character"),
        (", ".join(f"p{i}@example.net" for i in range(11)), "at most 10 addresses; you entered 11"),
        ("not an address", "cannot receive a test"),
        (" , ", "Enter at least one address"),
        ("a" * 100_000 + "@example.net", "too long for 10 addresses"),
    ],
)
def test_bad_addresses_are_refused_with_the_reason(
    admin_client, admin_user, ses, campaign, addresses, reason
):
    response = admin_client.post(_proof_url(campaign), {"addresses": addresses})

    assert response.status_code == 302
    assert reason in _messages(response) and "The test was not sent." in _messages(response)
    assert ses.messages() == []
    assert user_preferences(user=admin_user).proof_addresses == []


def test_a_contact_that_does_not_exist_is_refused(admin_client, ses, campaign):
    for wanted, reason in [
        ("999999", "No contact has that id or address"),
        ("99999999999999999999999", "No contact has that id or address"),
        ("nobody@example.org", "No contact has that id or address"),
        ("x" * 100_000, "it is too long"),
    ]:
        response = admin_client.post(
            _proof_url(campaign), {"addresses": "one@example.net", "contact": wanted}
        )
        assert reason in _messages(response)
    assert ses.messages() == []


def test_a_template_that_no_longer_compiles_is_refused_with_the_reason(admin_client, ses, campaign):
    # Saved before a rule tightened, or written around the form: the send would refuse it.
    type(campaign.template).objects.filter(pk=campaign.template_id).update(
        html="<p>{% if first_name %}unclosed</p>"
    )

    response = admin_client.post(_proof_url(campaign), {"addresses": "one@example.net"})

    assert "The test was not sent. The template cannot be sent: line 1:" in _messages(response)
    assert ses.messages() == []


def test_ses_refusing_or_failing_is_said_in_plain_words(admin_client, ses, campaign):
    ses.faults(throttle=1.0)
    response = admin_client.post(_proof_url(campaign), {"addresses": "one@example.net"})
    assert "accepted the test for 0 of 1 address." in _messages(response)
    assert "Amazon SES was busy or could not be reached" in _messages(response)

    ses.faults(throttle=0, error_5xx=1.0)
    response = admin_client.post(_proof_url(campaign), {"addresses": "one@example.net"})
    assert "the test may or may not arrive" in _messages(response)
    assert ses.messages() == []
    _nothing_recorded(campaign)


@pytest.fixture
def slow_account(settings):
    """A sandbox account's MaxSendRate: 1 a second (paced at 0.5, one at a time)."""
    from campaigns.ratelimit import ses_rate_limiter_reset

    settings.SES_MAX_SEND_RATE = 1
    ses_rate_limiter_reset()
    yield
    settings.SES_MAX_SEND_RATE = 0
    ses_rate_limiter_reset()


def test_a_proof_the_accounts_rate_would_hold_too_long_asks_for_fewer_addresses(
    admin_client, ses, campaign, slow_account
):
    many = ",".join(f"p{i}@example.net" for i in range(10))
    response = admin_client.post(_proof_url(campaign), {"addresses": many})
    assert "(1 a second) a test to 10 addresses takes 18 seconds" in _messages(response)
    assert ses.messages() == []

    response = admin_client.post(_proof_url(campaign), {"addresses": "a@example.net"})
    assert "Test sent" in _messages(response)


def test_a_proof_waits_its_turn_in_the_shared_rate_and_says_when_it_is_taken(
    admin_client, ses, campaign, slow_account
):
    from campaigns import ratelimit

    limiter, _ = ratelimit.ses_rate_limiter()
    limiter.reserve(100)  # a campaign's batches hold the next 200 seconds
    try:
        response = admin_client.post(_proof_url(campaign), {"addresses": "a@example.net"})
    finally:  # give the slots back: the limiter's key outlives the test
        ratelimit._redis_client().delete(limiter.key)

    assert "Campaigns are using the whole SES sending rate right now." in _messages(response)
    assert ses.messages() == []


def test_a_proof_is_refused_when_the_shared_rate_cannot_be_checked(
    admin_client, ses, campaign, settings
):
    from campaigns.ratelimit import ses_rate_limiter_reset

    with socket.socket() as probe:  # a Redis nobody answers for
        probe.bind(("127.0.0.1", 0))
        settings.REDIS_URL = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    ses_rate_limiter_reset()
    try:
        response = admin_client.post(_proof_url(campaign), {"addresses": "a@example.net"})
    finally:
        ses_rate_limiter_reset()
    assert "The shared sending rate could not be checked" in _messages(response)
    assert ses.messages() == []


def test_an_endpoint_that_is_down_is_said_in_plain_words(admin_client, campaign, ses_unreachable):
    response = admin_client.post(_proof_url(campaign), {"addresses": "one@example.net"})
    text = _messages(response)
    assert "The test was not sent." in text and "could not be reached" in text


def test_the_proofs_unsubscribe_link_unsubscribes_nobody(client, admin_client, ses, campaign):
    admin_client.post(_proof_url(campaign), {"addresses": "one@example.net"})
    path = PROOF_UNSUBSCRIBE.removeprefix("http://tracking.test")

    [message] = ses.messages()
    assert _headers(message)["List-Unsubscribe"] == f"<{PROOF_UNSUBSCRIBE}>"

    responses = [
        client.get(path),
        client.post(
            path, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
        ),
        client.post(path, {"scope": "all"}),
    ]
    assert [r.status_code for r in responses] == [404, 404, 404]  # not a token of anybody's

    assert set(Contact.objects.values_list("status", flat=True)) == {Contact.Status.ACTIVE}
    assert not campaign.contact_list.membership_set.filter(unsubscribed_at__isnull=False).exists()


def test_logs_carry_ids_not_addresses(admin_client, ses, campaign, caplog):
    with caplog.at_level(logging.DEBUG):
        admin_client.post(_proof_url(campaign), {"addresses": "secret.person@example.net"})
    assert ses.messages()
    assert "test send campaign=" in caplog.text
    assert "secret.person" not in caplog.text and "Ada" not in caplog.text


def _client(*codenames: str) -> Client:
    user = User.objects.create_user(username="clerk", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_a_view_only_user_gets_403_and_sends_nothing(ses, campaign):
    client = _client("view_campaign", "view_template", "view_contact")

    assert client.post(_proof_url(campaign), {"addresses": "one@example.net"}).status_code == 403
    template_url = f"/admin/templates_app/template/{campaign.template_id}/test-send/"
    assert client.post(template_url, {"addresses": "one@example.net"}).status_code == 403
    page = client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "test-send" not in page
    assert ses.messages() == []


def test_rendering_a_contacts_data_needs_the_view_permission_on_contacts(ses, campaign):
    client = _client("view_campaign", "change_campaign")

    first = campaign.contact_list.contacts.order_by("id").first()
    named = client.post(_proof_url(campaign), {"addresses": "one@example.net", "contact": first.pk})
    assert named.status_code == 403
    assert ses.messages() == []

    response = client.post(_proof_url(campaign), {"addresses": "one@example.net"})
    assert "Test sent" in _messages(response)
    [message] = ses.messages()
    assert message["subject"] == "[Test] Hello " and "Ada" not in message["html"]


def test_a_proof_needs_a_post_with_the_csrf_token(admin_user, ses, campaign):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    assert client.get(_proof_url(campaign)).status_code == 405
    assert client.post(_proof_url(campaign), {"addresses": "one@example.net"}).status_code == 403
    assert ses.messages() == []
