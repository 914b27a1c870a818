"""A click through a link of the text part, end to end: sent on each path through the local
SES endpoint, followed through the click view, counted in the report with the HTML part's
link to the same destination (one link row, so the per-link counts add up)."""

import re

import pytest
from django.conf import settings

from campaigns import services
from campaigns.models import Campaign
from tests.factories import CampaignFactory, TemplateFactory, list_with_contacts
from tracking.reports.report import campaign_report

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
HOME = "203.0.113.7"
SHOP = "https://shop.example/spring?utm_source=mail&b=2"
TEXT_ONLY = "https://shop.example/text-only"


@pytest.mark.parametrize("send_path", [Campaign.SendPath.BULK, Campaign.SendPath.RENDERED])
def test_a_click_in_the_text_part_is_recorded_with_the_html_links_clicks(
    send_path, client, eager_celery, ses, django_capture_on_commit_callbacks
):
    template = TemplateFactory(
        html=f'<p><a href="{SHOP.replace("&", "&amp;")}">Shop</a></p>',
        text=f"Shop: {SHOP}.\nOnly here: ({TEXT_ONLY})\nLeave: {{{{ unsubscribe_url }}}}",
    )
    campaign = CampaignFactory(
        contact_list=list_with_contacts(2), template=template, send_path=send_path
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.campaign_send_now(campaign=campaign)
    first, second = ses.messages(header=f"X-Campaign:{campaign.pk}")

    base = re.escape(settings.TRACKING_BASE_URL)
    clicks = re.compile(rf"{base}(/t/c/[0-9a-z]+\.[A-Za-z0-9_-]+/(\d+))")
    in_text = [(path, int(index)) for path, index in clicks.findall(first["text"])]
    assert [index for _, index in in_text] == [0, 1]
    assert f"{settings.TRACKING_BASE_URL}/t/u/" in first["text"]  # the footer link, unwrapped
    html_path = clicks.search(first["html"]).group(1)
    assert html_path == in_text[0][0]  # the same link, whichever part

    def follow(path: str) -> str:
        response = client.get(path, HTTP_USER_AGENT=BROWSER, REMOTE_ADDR=HOME)
        assert response.status_code == 302
        return response["Location"]

    assert follow(in_text[0][0]) == SHOP  # from the text part
    assert follow(html_path) == SHOP  # the same reader, from the HTML part
    assert follow(in_text[1][0]) == TEXT_ONLY
    assert follow(clicks.search(second["text"]).group(1)) == SHOP  # another reader

    report = campaign_report(campaign_id=campaign.pk)
    assert [(link.url, link.clicks, link.unique_clicks) for link in report.links] == [
        (SHOP, 3, 2),
        (TEXT_ONLY, 1, 1),
    ]
    assert (report.clicks, report.unique_clicks) == (4, 2)
