"""Limits at every door: the admin form refuses a template past one with the line and reason,
and a template saved before the limits existed is refused at campaign start with the reason
(a TemplateSyntaxError, never a RecursionError), instead of failing every retry."""

import pytest

from campaigns.models import Campaign
from campaigns.services import campaign_start
from templates_app.instrument import MAX_TRACKED_LINKS
from templates_app.language import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    TemplateLimitError,
    TemplateSyntaxError,
)
from templates_app.models import Template
from templates_app.services import template_compile, template_errors, template_snapshot
from tests.factories import CampaignFactory, TemplateFactory, list_with_contacts

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/templates_app/template/add/"


def nested(depth: int) -> str:
    return "{% if vip %}\n" * depth + "VIP" + "{% endif %}" * depth


def many_links(count: int) -> str:
    return "".join(f'<a href="https://shop.example/{i}">{i}</a>\n' for i in range(count))


def post_template(admin_client, **parts):
    fields = {"name": "Newsletter", "subject": "Hello", "html": "<p>Hi</p>", "text": "", **parts}
    response = admin_client.post(ADD_URL, fields)
    assert response.status_code == 200
    assert not Template.objects.exists()
    return response.content.decode()


@pytest.mark.parametrize(
    ("parts", "shown"),
    [
        (
            {"html": nested(MAX_DEPTH + 1)},
            f"Line {MAX_DEPTH + 1}: This is over a limit: conditions are nested more than "
            f"{MAX_DEPTH} levels deep here",
        ),
        ({"html": nested(1000)}, "Line 33: This is over a limit: conditions are nested"),
        (
            {"text": "x" * (MAX_BODY_BYTES + 1)},
            "Line 1: This is over a limit: the text body is 201 kB",
        ),
        (
            {"subject": "Hi\r\nBcc: x@evil.example"},
            "Line 1: This does not parse: the subject must be one line",
        ),
        (
            {"html": many_links(MAX_TRACKED_LINKS + 1)},
            f"Line {MAX_TRACKED_LINKS + 1}: This is over a limit: more than "
            f"{MAX_TRACKED_LINKS} different tracked links",
        ),
        (
            # 150,000 "<" in a fallback are 600 kB once escaped for SES
            {"html": '{{ first_name | default: "' + "<" * 150_000 + '" }}'},
            "more than the 500 kB SES takes for one template",
        ),
    ],
    ids=["too-deep", "1000-deep", "text-too-big", "subject-line-break", "links", "ses-size"],
)
def test_admin_refuses_a_template_past_a_limit_with_the_line_and_reason(admin_client, parts, shown):
    assert shown in post_template(admin_client, **parts)


def test_the_form_check_is_the_compile_a_campaign_start_does():
    errors = template_errors(subject="Hi", html=many_links(MAX_TRACKED_LINKS + 1), text="")
    assert set(errors) == {"html"}
    assert isinstance(errors["html"], TemplateLimitError)
    assert template_errors(subject="Hi", html=many_links(MAX_TRACKED_LINKS), text="") == {}


# case → (parts saved, part refused, the refusal's type, its reason)
SAVED_BEFORE_THE_LIMITS = {
    "deep": ({"html": nested(1000)}, "html", TemplateLimitError, "conditions are nested"),
    "elsif": (
        {"html": "{% if a %}" + "{% elsif b %}" * 5000 + "{% endif %}"},
        "html",
        TemplateLimitError,
        "conditions are nested",
    ),
    "subject": (
        {"subject": "Hi {{ first_name }}\r\nBcc: x@evil.example"},
        "subject",
        TemplateSyntaxError,
        "the subject must be one line",
    ),
    "size": ({"text": "<a x" * 100_000}, "text", TemplateLimitError, "the text body is 391 kB"),
}


@pytest.mark.parametrize("case", SAVED_BEFORE_THE_LIMITS)
def test_a_template_saved_before_the_limits_is_refused_by_compile(case):
    parts, part, error, reason = SAVED_BEFORE_THE_LIMITS[case]
    template = TemplateFactory(**parts)  # saved directly, as before the form checked limits
    for source in (template, template_snapshot(template=template)):
        with pytest.raises(error) as info:
            template_compile(template=source, tracking_base_url="https://t.example")
        assert info.value.part == part
        assert info.value.reason.startswith(f"{part}: {reason}")


@pytest.mark.parametrize("case", SAVED_BEFORE_THE_LIMITS)
def test_campaign_start_fails_a_template_saved_before_the_limits_with_the_reason(case):
    parts, part, _, reason = SAVED_BEFORE_THE_LIMITS[case]
    campaign = CampaignFactory(
        template=TemplateFactory(**parts),
        contact_list=list_with_contacts(1),
        status=Campaign.Status.SCHEDULED,
    )
    campaign_start(campaign_id=campaign.pk)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.FAILED
    assert f"{part}: {reason}" in campaign.status_reason


def test_preview_of_a_template_saved_before_the_limits_shows_the_reason(admin_client):
    template = TemplateFactory(html=nested(1000))
    page = admin_client.get(f"/admin/templates_app/template/{template.pk}/preview/")
    assert "html: conditions are nested more than" in page.content.decode()
