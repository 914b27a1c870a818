"""Unsubscribes: RFC 8058 one-click, a page link scanners cannot trigger, and every later
campaign honouring them (in-process; the send path against the local SES endpoint)."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from django.test import Client
from django.urls import reverse

from campaigns import delivery, services
from campaigns.counters import campaign_counters
from campaigns.models import Contact, Membership, Notification
from campaigns.tokens import (
    list_unsubscribe_header_for_url,
    list_unsubscribe_headers,
    notification_id_from,
    notification_id_from_unsubscribe_token,
    token_for,
    unsubscribe_token_for,
    unsubscribe_url,
    unsubscribe_urls_for,
)
from tests.conftest import ROOT
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    ContactListFactory,
    NotificationFactory,
)
from tracking.models import Event
from tracking.unsubscribe.services import contact_unsubscribe

pytestmark = pytest.mark.django_db

ONE_CLICK = "List-Unsubscribe=One-Click"
SCANNER_AGENTS = [
    "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0; Pro)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)",
    "",
]


def _notification(*, contact=None, contact_list=None) -> Notification:
    """A sent message of a campaign to `contact_list`, whose recipient is a member of it."""
    contact = contact or ContactFactory(email="recipient.secret@private.example")
    contact_list = contact_list or ContactListFactory()
    Membership.objects.get_or_create(contact_list=contact_list, contact=contact)
    return NotificationFactory(
        campaign__contact_list=contact_list,
        contact=contact,
        sent=True,
        message_id=f"m-{contact.pk}",
    )


@pytest.fixture
def notification() -> Notification:
    return _notification()


@pytest.fixture
def strict_client() -> Client:
    """No cookies, and CSRF enforced as in production (the test client skips it otherwise)."""
    return Client(enforce_csrf_checks=True)


def _url(notification: Notification) -> str:
    return f"/t/u/{unsubscribe_token_for(notification.pk)}"


def _membership(notification: Notification) -> Membership:
    return Membership.objects.get(
        contact_list=notification.campaign.contact_list, contact=notification.contact
    )


def _nothing_changed(notification: Notification) -> None:
    assert _membership(notification).unsubscribed_at is None
    notification.contact.refresh_from_db()
    assert notification.contact.status == Contact.Status.ACTIVE
    assert not Event.objects.exists()
    assert "unsubscribed" not in campaign_counters(campaign_id=notification.campaign_id)


# -- headers and URLs -------------------------------------------------------------------------


def test_headers_are_rfc_8058_one_click_with_an_https_uri(settings):
    settings.TRACKING_BASE_URL = "https://mail.example.com"
    token = unsubscribe_token_for(123456789)
    headers = list_unsubscribe_headers(notification_id=123456789)
    assert set(headers) == {"List-Unsubscribe", "List-Unsubscribe-Post"}
    # RFC 8058 §3.1: exactly this value; RFC 2369: each URI in angle brackets; one https URI.
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"] == f"<https://mail.example.com/t/u/{token}>"
    assert re.fullmatch(r"<https://[^\s<>,]+>", headers["List-Unsubscribe"])
    # The path the URL builder spells out is the one the URLconf serves.
    assert unsubscribe_url(notification_id=123456789).endswith(
        reverse("tracking:unsubscribe", kwargs={"token": token})
    )


def test_production_config_gives_an_https_header_without_a_double_slash():
    """The real settings module, as production loads it (DEBUG off, base URL from the env)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "production-like-secret-for-this-test-only",
        "TRACKING_BASE_URL": "https://mail.example.com/",
    }
    code = (
        "import django, json; django.setup(); "
        "from campaigns.tokens import list_unsubscribe_headers; "
        "print(json.dumps(list_unsubscribe_headers(notification_id=42)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    headers = json.loads(out.stdout)
    assert re.fullmatch(r"<https://mail\.example\.com/t/u/16\.[A-Za-z0-9_-]{16}>", headers[
        "List-Unsubscribe"
    ])  # fmt: skip
    assert headers["List-Unsubscribe-Post"] == ONE_CLICK


def test_urls_are_built_in_a_batch_without_the_database(settings, django_assert_num_queries):
    """What the send worker calls per SES group: one URL per notification, each with the
    unsubscribe token (never the pixel's), the same as one at a time."""
    settings.TRACKING_BASE_URL = "https://mail.example.com"
    ids = [7, 8, 10**12]
    with django_assert_num_queries(0):
        urls = unsubscribe_urls_for(ids)
    assert urls == [unsubscribe_url(notification_id=nid) for nid in ids]
    for nid, url in zip(ids, urls, strict=True):
        prefix, _, token = url.rpartition("/")
        assert prefix == "https://mail.example.com/t/u"
        assert notification_id_from_unsubscribe_token(token) == nid
        assert notification_id_from(token) is None  # no open or click with it
        assert list_unsubscribe_header_for_url(url) == {"List-Unsubscribe": f"<{url}>"}
    assert unsubscribe_urls_for([]) == []


# -- RFC 8058 one-click -----------------------------------------------------------------------


def test_one_click_post_unsubscribes_from_the_list_without_cookies_or_csrf(
    strict_client, notification
):
    response = strict_client.post(
        _url(notification), ONE_CLICK, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200  # not a redirect: providers do not follow one
    assert "Location" not in response
    assert not response.cookies  # no Set-Cookie
    assert _membership(notification).unsubscribed_at is not None
    notification.contact.refresh_from_db()
    assert notification.contact.status == Contact.Status.ACTIVE  # only that list
    event = Event.objects.get()
    assert (event.type, event.source, event.notification_id) == (
        Event.Type.UNSUBSCRIBED,
        Event.Source.RECIPIENT,
        notification.pk,
    )
    assert campaign_counters(campaign_id=notification.campaign_id)["unsubscribed"] == 1


def test_one_click_is_repeatable_one_event_one_count(strict_client, notification):
    first_time = _membership(notification)
    # RFC 8058 recommends multipart/form-data; the test client's default encoding is that.
    for _ in range(3):
        response = strict_client.post(_url(notification), {"List-Unsubscribe": "One-Click"})
        assert response.status_code == 200
        assert not response.cookies
    # Some senders' tools post the bare body with no form content type.
    response = strict_client.post(_url(notification), ONE_CLICK, content_type="text/plain")
    assert response.status_code == 200
    unsubscribed_at = _membership(notification).unsubscribed_at
    assert unsubscribed_at is not None and first_time.unsubscribed_at is None
    assert Event.objects.filter(type=Event.Type.UNSUBSCRIBED).count() == 1
    assert campaign_counters(campaign_id=notification.campaign_id)["unsubscribed"] == 1


def test_a_post_that_is_neither_one_click_nor_the_page_form_changes_nothing(
    strict_client, notification
):
    for body in [{"List-Unsubscribe": "no"}, {"scope": "all"}, {}]:
        response = strict_client.post(_url(notification), body)
        assert response.status_code == 403  # no CSRF token: the page comes back, nothing done
        assert b"<form" in response.content
    _nothing_changed(notification)


# -- the page: GET shows, POST does -----------------------------------------------------------


@pytest.mark.parametrize("user_agent", SCANNER_AGENTS)
def test_get_and_head_change_nothing(strict_client, notification, user_agent):
    url = _url(notification)
    page = strict_client.get(url, HTTP_USER_AGENT=user_agent)
    assert page.status_code == 200
    html = page.content.decode()
    assert re.search(r'<form method="post" action="/t/u/[^"]+"', html)
    assert 'name="scope" value="list" checked' in html and 'name="scope" value="all"' in html
    assert notification.campaign.contact_list.name in html
    assert "r•••@private.example" in html
    assert "recipient.secret" not in html  # the address is masked, not shown
    assert "no-cache" in page["Cache-Control"]
    assert strict_client.head(url, HTTP_USER_AGENT=user_agent).status_code == 200
    _nothing_changed(notification)


def _page_post(client: Client, notification: Notification, scope: str):
    page = client.get(_url(notification))
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    return client.post(_url(notification), {"scope": scope, "csrfmiddlewaretoken": csrf[1]})


def test_page_post_all_suppresses_all_mail(strict_client, notification):
    response = _page_post(strict_client, notification, "all")
    assert response.status_code == 200
    assert "no more mail from us" in response.content.decode()
    notification.contact.refresh_from_db()
    assert notification.contact.status == Contact.Status.UNSUBSCRIBED
    assert _membership(notification).unsubscribed_at is None  # "all" is the contact's status
    assert Event.objects.get().description == "all mail (page)"
    assert campaign_counters(campaign_id=notification.campaign_id)["unsubscribed"] == 1

    # Again: the same page, no new state.
    assert _page_post(strict_client, notification, "all").status_code == 200
    assert Event.objects.count() == 1

    # Every list's next campaign leaves them out.
    other_list = ContactListFactory()
    Membership.objects.create(contact_list=other_list, contact=notification.contact)
    services._freeze_audience(
        campaign_id=CampaignFactory(contact_list=other_list).pk,
        contact_list_id=other_list.pk,
        contact_ids=(0, None),
    )
    assert Notification.objects.filter(contact=notification.contact).count() == 1


def test_page_post_list_then_all_through_one_message_counts_one_recipient(
    strict_client, notification
):
    assert _page_post(strict_client, notification, "list").status_code == 200
    assert _membership(notification).unsubscribed_at is not None
    assert _page_post(strict_client, notification, "all").status_code == 200
    assert Event.objects.count() == 2  # two changes
    assert campaign_counters(campaign_id=notification.campaign_id)["unsubscribed"] == 1


def test_page_post_with_a_bad_choice_changes_nothing(strict_client, notification):
    assert _page_post(strict_client, notification, "everything").status_code == 400
    _nothing_changed(notification)


def test_all_never_overwrites_bounced_or_complained():
    for status in (Contact.Status.BOUNCED, Contact.Status.COMPLAINED):
        notification = _notification(contact=ContactFactory(status=status))
        outcome = contact_unsubscribe(
            notification_id=notification.pk, scope="all", source=Event.Source.RECIPIENT
        )
        assert outcome is not None and not outcome.changed
        notification.contact.refresh_from_db()
        assert notification.contact.status == status
        assert not Event.objects.filter(notification=notification).exists()


def test_a_recipient_removed_from_the_list_stays_unsubscribed_if_added_back(notification):
    _membership(notification).delete()
    outcome = contact_unsubscribe(
        notification_id=notification.pk, scope="list", source=Event.Source.RECIPIENT
    )
    assert outcome.changed
    contact_list = notification.campaign.contact_list
    services.contact_list_add(contact_list=contact_list, contact_ids=[notification.contact_id])
    assert _membership(notification).unsubscribed_at is not None


# -- bad tokens -------------------------------------------------------------------------------


def test_forged_or_unknown_tokens_get_a_404_and_change_nothing(
    strict_client, notification, caplog, settings
):
    caplog.set_level(logging.DEBUG)
    real = unsubscribe_token_for(notification.pk)
    head, _, signature = real.partition(".")
    original_key = settings.SECRET_KEY
    settings.SECRET_KEY = "a-key-this-site-never-had-" + "x" * 30
    unknown_key = unsubscribe_token_for(notification.pk)
    settings.SECRET_KEY = original_key
    # Past every row there is (earlier tests may have left rows with higher ids behind).
    unused_id = Notification.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000
    tokens = [
        f"{head}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",  # one character off
        f"{int(head, 36) + 1:x}.{signature}",  # another id, same signature
        real[:-3],  # cut short
        unsubscribe_token_for(unused_id),  # valid, but names no message
        unknown_key,  # signed with a key that is neither the key nor a fallback
        f"{head.upper()}.{signature}",  # another spelling of the same id
        f"{real}%0D%0AX-Injected:%201",  # CR LF
        real + "x" * 5000,
        "junk",
    ]
    for token in tokens:
        for response in (
            strict_client.get(f"/t/u/{token}"),
            strict_client.post(f"/t/u/{token}", ONE_CLICK, content_type="text/plain"),
        ):
            assert response.status_code == 404
            assert "This unsubscribe link is not valid" in response.content.decode()
    _nothing_changed(notification)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/t/u/" not in logged  # Django's "Not Found: <path>" would carry the token


def test_the_pixels_and_links_token_cannot_unsubscribe(strict_client, notification):
    """The open pixel's and click links' token travels in URLs that image proxies and link
    scanners fetch and log: at the unsubscribe URL it is an invalid token, whatever is sent."""
    tracking_url = f"/t/u/{token_for(notification.pk)}"
    assert strict_client.get(tracking_url).status_code == 404
    assert strict_client.head(tracking_url).status_code == 404
    one_clicks = [
        {"data": ONE_CLICK, "content_type": "application/x-www-form-urlencoded"},
        {"data": {"List-Unsubscribe": "One-Click"}},  # multipart/form-data
        {"data": ONE_CLICK, "content_type": "text/plain"},
    ]
    for kwargs in one_clicks:
        response = strict_client.post(tracking_url, **kwargs)
        assert response.status_code == 404
        assert "This unsubscribe link is not valid" in response.content.decode()
    # The page's form, with a CSRF token the real page handed out, aimed at the other token.
    page = strict_client.get(_url(notification))
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    for scope in ("list", "all"):
        response = strict_client.post(tracking_url, {"scope": scope, "csrfmiddlewaretoken": csrf})
        assert response.status_code == 404
    _nothing_changed(notification)


def test_links_sent_before_a_key_rotation_still_unsubscribe(strict_client, notification, settings):
    old_key = settings.SECRET_KEY
    url = _url(notification)  # in a message sent before the rotation
    settings.SECRET_KEY = "the-new-secret-" + "n" * 40
    settings.SECRET_KEY_FALLBACKS = []
    assert strict_client.post(url, ONE_CLICK, content_type="text/plain").status_code == 404
    _nothing_changed(notification)
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert strict_client.get(url).status_code == 200
    assert strict_client.post(url, ONE_CLICK, content_type="text/plain").status_code == 200
    assert _membership(notification).unsubscribed_at is not None
    # The link of a message sent after the rotation works too, and is another URL.
    assert _url(notification) != url
    assert (
        strict_client.post(_url(notification), ONE_CLICK, content_type="text/plain").status_code
        == 200
    )


@pytest.mark.parametrize("send_path", ["bulk", "rendered"])
def test_a_sent_message_carries_each_token_where_it_belongs(
    ses, django_capture_on_commit_callbacks, send_path
):
    """The List-Unsubscribe header and the footer's {{ unsubscribe_url }}: the unsubscribe
    token. The open pixel and the click links: the tracking token. Neither anywhere else."""
    from tests.factories import TemplateFactory

    template = TemplateFactory(
        html='<p><a href="https://example.com/a">A</a></p>'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
        text="Leave: {{ unsubscribe_url }}",
    )
    contact_list = ContactListFactory()
    contact = ContactFactory()
    Membership.objects.create(contact_list=contact_list, contact=contact)
    campaign = CampaignFactory(contact_list=contact_list, template=template, send_path=send_path)
    _send(campaign, django_capture_on_commit_callbacks)
    nid = Notification.objects.get(campaign=campaign).pk
    (message,) = ses.messages(header=f"X-Campaign:{campaign.pk}")
    headers = {h["name"].lower(): h["value"] for h in message["headers"]}

    header_url = headers["list-unsubscribe"].strip("<>")
    assert header_url == unsubscribe_url(notification_id=nid)
    unsubscribe_token = header_url.rpartition("/")[2]
    assert notification_id_from_unsubscribe_token(unsubscribe_token) == nid
    assert notification_id_from(unsubscribe_token) is None
    # The footer link (HTML and text) is the header's URL, and the only place of its token.
    assert f'href="{header_url}"' in message["html"]
    assert f"Leave: {header_url}" in message["text"]
    assert message["html"].count(unsubscribe_token) == message["text"].count(unsubscribe_token) == 1
    # The pixel and the link (and the invisible honeypot link) carry the tracking token.
    tracked = re.findall(r"/t/([oc])/([^/\"]+?)(?:\.gif|/\d+)\"", message["html"])
    assert sorted(tracked) == [("c", token_for(nid)), ("c", token_for(nid)), ("o", token_for(nid))]
    assert token_for(nid) not in header_url


def test_logs_carry_ids_never_tokens_or_addresses(strict_client, notification, caplog):
    caplog.set_level(logging.DEBUG)
    url = _url(notification)
    strict_client.get(url)
    strict_client.post(url, {"scope": "all"})  # refused: no CSRF token
    strict_client.put(url)  # 405
    strict_client.post(url, ONE_CLICK, content_type="application/x-www-form-urlencoded")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"notification={notification.pk}" in logged
    for secret in [unsubscribe_token_for(notification.pk), "recipient.secret", "private.example"]:
        assert secret not in logged


# -- honoured by the next campaigns -----------------------------------------------------------


def _send(campaign, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_send_now(campaign=campaign)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_start(campaign_id=campaign.pk)
    ids = Notification.objects.filter(campaign=campaign).values_list("id", flat=True)
    delivery.deliver_batch(campaign_id=campaign.pk, first_id=min(ids), last_id=max(ids))


def test_unsubscribed_from_list_a_skips_list_a_but_still_gets_list_b(
    strict_client, ses, django_capture_on_commit_callbacks
):
    leaver, stayer = ContactFactory(), ContactFactory()
    list_a, list_b = ContactListFactory(), ContactListFactory()
    for contact_list in (list_a, list_b):
        for contact in (leaver, stayer):
            Membership.objects.create(contact_list=contact_list, contact=contact)
    earlier = _notification(contact=leaver, contact_list=list_a)
    assert (
        strict_client.post(_url(earlier), ONE_CLICK, content_type="text/plain").status_code == 200
    )

    to_a, to_b = CampaignFactory(contact_list=list_a), CampaignFactory(contact_list=list_b)
    for campaign in (to_a, to_b):
        _send(campaign, django_capture_on_commit_callbacks)

    def recipients(campaign) -> set[str]:
        return {m["to"][0] for m in ses.messages(header=f"X-Campaign:{campaign.pk}")}

    assert recipients(to_a) == {stayer.email}
    assert recipients(to_b) == {leaver.email, stayer.email}
    to_a.refresh_from_db()
    assert to_a.recipient_count == 1


def test_a_list_unsubscribe_after_the_freeze_is_skipped_at_claim_time(
    strict_client, ses, django_capture_on_commit_callbacks
):
    """Effective at once: the send code's claim reads Membership.unsubscribed_at too."""
    contact_list = ContactListFactory()
    leaver = ContactFactory()
    Membership.objects.create(contact_list=contact_list, contact=leaver)
    campaign = CampaignFactory(contact_list=contact_list)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_send_now(campaign=campaign)
    with django_capture_on_commit_callbacks(execute=False):
        services.campaign_start(campaign_id=campaign.pk)
    frozen = Notification.objects.get(campaign=campaign)
    earlier = _notification(contact=leaver, contact_list=contact_list)
    strict_client.post(_url(earlier), ONE_CLICK, content_type="text/plain")
    result = delivery.deliver_batch(campaign_id=campaign.pk, first_id=frozen.pk, last_id=frozen.pk)
    frozen.refresh_from_db()
    assert frozen.status == Notification.Status.SKIPPED
    assert (result.sent, ses.stats()["recipients"]) == (0, 0)


def test_deploy_check_warns_about_an_http_tracking_base_url(settings):
    from tracking.checks import tracking_base_url_is_https

    settings.TRACKING_BASE_URL = "http://mail.example.com"
    assert [m.id for m in tracking_base_url_is_https(None)] == ["tracking.W001"]
    settings.TRACKING_BASE_URL = "https://mail.example.com"
    assert tracking_base_url_is_https(None) == []
