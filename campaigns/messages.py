"""What each message of a campaign carries: its compiled template, one recipient's template
data (contact fields, tracking token, unsubscribe URL) and the headers all share.

Both ways of sending (campaigns.senders) build their messages from these, so the bulk path
(SES renders) and the rendered path give the same bytes for the same recipient.
"""

import functools
import json
from collections.abc import Mapping

from django.conf import settings

from campaigns.ledger import ClaimedRow
from campaigns.models import Campaign
from campaigns.tokens import ONE_CLICK_HEADER
from templates_app.models import Template
from templates_app.render import merge_value
from templates_app.services import (
    CompiledTemplate,
    RenderedMessage,
    template_compile,
    template_snapshot,
)

TOKEN_FIELD = "_t"  # noqa: S105 (a template field name, not a secret)
# A footer's {{ unsubscribe_url }}: filled in per recipient, never read from the contact.
UNSUBSCRIBE_FIELD = "unsubscribe_url"
BUILTIN_FIELDS = frozenset({TOKEN_FIELD, UNSUBSCRIBE_FIELD})
# What a preview shows for {{ unsubscribe_url }}: each recipient gets their own link.
PREVIEW_UNSUBSCRIBE_URL = "#unsubscribe-link-of-the-recipient"
# Template fields that are contact columns; any other field is read from `attributes`.
CONTACT_FIELDS = frozenset({"email", "first_name", "last_name"})

# A template's fields as (contact columns, attributes, shows the unsubscribe URL).
MergePlan = tuple[tuple[str, ...], tuple[str, ...], bool]


def campaign_compiled_template(campaign: Campaign) -> CompiledTemplate:
    """The campaign's frozen template, compiled with tracking (once per process and content).

    A started campaign's SES template name names its content (campaign id and a hash of the
    compiled template), so the snapshot is read and compiled once per name and process."""
    name, base_url = campaign.ses_template_name, settings.TRACKING_BASE_URL
    compiled = _compiled_by_name.get((campaign.pk, name, base_url)) if name else None
    if compiled is None:
        snapshot = campaign.template_snapshot or template_snapshot(template=campaign.template)
        compiled = _compile_snapshot(json.dumps(snapshot, sort_keys=True), base_url)
        if name and campaign.template_snapshot:
            if len(_compiled_by_name) >= 32:  # a long-lived worker sends many campaigns
                _compiled_by_name.clear()
            _compiled_by_name[(campaign.pk, name, base_url)] = compiled
    return compiled


_compiled_by_name: dict[tuple[int, str, str], CompiledTemplate] = {}


@functools.lru_cache(maxsize=32)
def _compile_snapshot(snapshot_json: str, tracking_base_url: str) -> CompiledTemplate:
    return template_compile(template=json.loads(snapshot_json), tracking_base_url=tracking_base_url)


@functools.lru_cache(maxsize=64)
def merge_plan(fields: frozenset[str]) -> MergePlan:
    """A template's fields split once per template: (contact columns, attributes, shows the
    unsubscribe URL)."""
    own = fields - BUILTIN_FIELDS
    return (
        tuple(sorted(own & CONTACT_FIELDS)),
        tuple(sorted(own - CONTACT_FIELDS)),
        UNSUBSCRIBE_FIELD in fields,
    )


def merge_data(
    row: ClaimedRow, plan: MergePlan, token: str, unsubscribe_url: str
) -> dict[str, str]:
    """One recipient's template data: the contact's fields (as services.contact_merge_data
    gives them), their tracking token, and their unsubscribe URL where the template shows it
    (built-ins last: a contact attribute of the same name cannot replace them). Built
    directly from the claimed row, with the template's merge_plan."""
    columns, attributes, shows_unsubscribe = plan
    data = {name: merge_value(getattr(row, name)) for name in columns}
    for name in attributes:
        data[name] = merge_value(row.attributes.get(name))
    data[TOKEN_FIELD] = token
    if shows_unsubscribe:
        data[UNSUBSCRIBE_FIELD] = unsubscribe_url
    return data


def message_preview(*, template: Template, values: Mapping[str, object]) -> RenderedMessage:
    """The template rendered for these field values (a contact's, or an API caller's
    personalisation), each made the text the sender would make it (merge_value); fields
    without a value are empty, so fallbacks show. Links are shown as written (a real message's
    go through tracking). The admin's preview and POST /api/v1/templates/{id}/preview.

    Raises TemplateSyntaxError (with its part and line) for a template that does not compile.
    """
    compiled = template_compile(template=template, tracking_base_url=None)
    data = {name: merge_value(values.get(name)) for name in compiled.fields - BUILTIN_FIELDS}
    if UNSUBSCRIBE_FIELD in compiled.fields:
        data[UNSUBSCRIBE_FIELD] = PREVIEW_UNSUBSCRIBE_URL
    return compiled.render(data)


def carries_list_unsubscribe(campaign: Campaign) -> bool:
    """Whether its messages carry List-Unsubscribe (RFC 2369/8058): all but transactional
    ones, which are not mailings (a receipt, a password reset), as with Postmark and Notify.
    Their footer's {{ unsubscribe_url }}, if the template shows one, still works."""
    return campaign.kind != Campaign.Kind.TRANSACTIONAL


def shared_headers(campaign: Campaign) -> dict[str, str]:
    """The headers every message of the campaign carries alike: the campaign id (for SES
    event routing and the local endpoint's counts) and RFC 8058's List-Unsubscribe-Post
    (where its messages carry List-Unsubscribe)."""
    if not carries_list_unsubscribe(campaign):
        return {"X-Campaign": str(campaign.pk)}
    return {"X-Campaign": str(campaign.pk), **ONE_CLICK_HEADER}
