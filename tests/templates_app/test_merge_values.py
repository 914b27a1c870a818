"""A contact's field with a line break or a control character can never break a header: merge
values turn them into spaces, so both send paths put the same one-line subject in the message
(SES renders the bulk path's from the merge data, the rendered path renders it here)."""

import json

import pytest

from campaigns.models import Campaign, Notification
from campaigns.services import contact_merge_data
from seslocal.handlebars import compile_template, parse_data
from templates_app.render import merge_value, render
from templates_app.services import template_compile
from tests.factories import CampaignFactory, TemplateFactory, list_with_contacts
from tests.review_helpers import confirm_send_now

HOSTILE_NAME = "Ann\r\nBcc: x@evil.example"
SAFE_SUBJECT = "Hi Ann  Bcc: x@evil.example!"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (HOSTILE_NAME, "Ann  Bcc: x@evil.example"),
        ("a\nb\rc", "a b c"),
        ("\x00\x01\x08\x0b\x0c\x0e\x1b\x1f\x7f", " " * 9),
        ("line\x85next\u2028sep\u2029para", "line next sep para"),
        ("tab\tkept", "tab\tkept"),
        (
            "no-break\xa0space, zero\u200dwidth joiner, é, 😀",
            "no-break\xa0space, zero\u200dwidth joiner, é, 😀",
        ),
    ],
)
def test_merge_value_turns_line_breaks_and_controls_into_spaces(value, expected):
    assert merge_value(value) == expected


def test_merge_value_returns_the_same_string_when_there_is_nothing_to_replace():
    value = "ana.lopez@example.com"
    assert merge_value(value) is value  # the send's usual case: no copy


def test_subject_rendered_here_and_by_ses_is_the_same_single_line():
    compiled = template_compile(
        template={"subject": "Hi {{ first_name }}!", "html": "<p>{{ first_name }}</p>", "text": ""},
        tracking_base_url=None,
    )
    data = contact_merge_data(
        email="ann@example.com",
        first_name=HOSTILE_NAME,
        last_name="",
        attributes={},
        fields=compiled.fields,
    )
    local = render(compiled.subject, data, html=False)
    ses = compile_template(compiled.handlebars()["Subject"])(parse_data(json.dumps(data)))
    assert local == ses == SAFE_SUBJECT


@pytest.mark.django_db
@pytest.mark.parametrize("send_path", [Campaign.SendPath.BULK, Campaign.SendPath.RENDERED])
def test_a_name_with_a_line_break_is_sent_with_the_same_safe_subject_on_both_paths(
    admin_client, eager_celery, ses, django_capture_on_commit_callbacks, send_path
):
    contact_list = list_with_contacts(3, first_name=HOSTILE_NAME)
    campaign = CampaignFactory(
        contact_list=contact_list,
        template=TemplateFactory(subject="Hi {{ first_name }}!"),
        send_path=send_path,
    )
    with django_capture_on_commit_callbacks(execute=True):
        confirm_send_now(admin_client, campaign)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SENT
    assert Notification.objects.filter(campaign=campaign, status="sent").count() == 3
    messages = ses.messages()
    assert len(messages) == 3
    for message in messages:
        assert message["subject"] == SAFE_SUBJECT
        names = [name.lower() for name, _ in message["headers"]]
        assert "bcc" not in names
