"""The open pixel and click redirect: signed tokens, server-side destinations, no open redirect."""

import pytest

from campaigns.models import CampaignLink, Notification
from tests.factories import CampaignFactory, ContactFactory
from tracking.models import Event
from tracking.selectors import campaign_report
from tracking.tokens import notification_id_from, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def notification():
    campaign = CampaignFactory()
    CampaignLink.objects.create(campaign=campaign, index=0, url="https://example.com/a")
    CampaignLink.objects.create(campaign=campaign, index=1, url="javascript:alert(1)")
    return Notification.objects.create(
        campaign=campaign, contact=ContactFactory(), status="sent", message_id="m-1"
    )


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
    response = client.get(f"/t/o/{token_for(notification.pk)}.gif", HTTP_USER_AGENT="Mail/1.0")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert "no-cache" in response["Cache-Control"]
    event = Event.objects.get()
    assert (event.type, event.source, event.notification_id) == (
        "opened",
        "tracking",
        notification.pk,
    )
    assert event.user_agent == "Mail/1.0"
    assert campaign_report(campaign_id=notification.campaign_id).unique_opens == 1


def test_pixel_for_unknown_or_forged_token_returns_pixel_and_records_nothing(client, notification):
    for token in [token_for(notification.pk + 1000), "forged.token", "x"]:
        response = client.get(f"/t/o/{token}.gif")
        assert response.status_code == 200
        assert response["Content-Type"] == "image/gif"
    assert not Event.objects.exists()


def test_click_redirects_to_the_stored_link(client, notification):
    response = client.get(f"/t/c/{token_for(notification.pk)}/0")
    assert response.status_code == 302
    assert response["Location"] == "https://example.com/a"
    event = Event.objects.get()
    assert (event.type, event.link.index) == ("clicked", 0)
    report = campaign_report(campaign_id=notification.campaign_id)
    assert report.unique_clicks == 1
    assert [(link.index, link.clicks) for link in report.links] == [(0, 1), (1, 0)]


@pytest.mark.parametrize(
    "path",
    [
        "/t/c/{token}/1",  # a javascript: destination is never followed
        "/t/c/{token}/7",  # no such link
        "/t/c/forged.token/0",
        "/t/c/{token}/0?url=https://evil.example",
        "/t/c/{token}//evil.example",
    ],
)
def test_click_refuses_what_it_cannot_vouch_for(client, notification, path):
    response = client.get(path.format(token=token_for(notification.pk)))
    if response.status_code == 302:  # the query string is ignored, never used as a target
        assert response["Location"] == "https://example.com/a"
    else:
        assert response.status_code == 404
        assert "evil" not in response.content.decode()


def test_tracking_endpoints_refuse_other_methods(client, notification):
    assert client.post(f"/t/o/{token_for(notification.pk)}.gif").status_code == 405
    assert client.post(f"/t/c/{token_for(notification.pk)}/0").status_code == 405
    assert not Event.objects.exists()
