"""The pre-send review: what a campaign will do if confirmed now, read before Send now and
Schedule (campaigns/admin/review.py shows it). Reads only; the link check it starts runs in
the background (campaigns.linkcheck).

Warnings inform; a blocked review (no recipients, a template that does not compile, a time
that has passed) cannot be confirmed. The confirmation goes through the guarded services,
which check again.
"""

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Q, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.messages import BUILTIN_FIELDS, CONTACT_FIELDS, TOKEN_FIELD, UNSUBSCRIBE_FIELD
from campaigns.models import Campaign
from campaigns.quota import quota_remaining, ses_send_quota
from campaigns.ratelimit import ses_send_plan
from campaigns.selectors import EXCLUDED_REASONS, audience_counts, audience_memberships
from campaigns.services import contact_merge_data
from campaigns.ses.calls import SendQuota
from campaigns.tokens import tokens_for, unsubscribe_urls_for
from templates_app.language import TemplateSyntaxError
from templates_app.render import fields_without_default
from templates_app.services import CompiledTemplate, template_compile

# Gmail shows "[Message clipped]" and hides the rest (the unsubscribe link and the open pixel
# with it) once a message's HTML passes about 102 kB.
GMAIL_CLIP_BYTES = 102 * 1024
# A sample id for the size: tokens and unsubscribe URLs grow with the id, so a large one
# gives the longest a real recipient's message may carry.
_SAMPLE_NOTIFICATION_ID = 10**12


@dataclass(frozen=True)
class CampaignReview:
    send_at: datetime | None  # None: now
    recipients: int
    excluded: list[tuple[str, int]]  # (reason, members left out for it), nonzero only
    blocked: list[str]  # why it cannot be confirmed; empty: it can
    missing_fields: list[tuple[str, int]] = field(default_factory=list)  # (field, contacts)
    html_bytes: int | None = None  # the HTML as sent to a sample recipient
    links: tuple[str, ...] = ()
    has_unsubscribe_link: bool = False
    send_rate: float = 0.0  # recipients per second
    quota: SendQuota | None = None

    @property
    def clipped(self) -> bool:
        return self.html_bytes is not None and self.html_bytes > GMAIL_CLIP_BYTES

    @property
    def duration_seconds(self) -> float:
        return self.recipients / self.send_rate if self.send_rate > 0 else 0.0

    @property
    def quota_left(self) -> float | None:
        """Messages the 24-hour quota leaves for this send (None: no limit or not known):
        what is left now for Send now, the whole quota for a later time."""
        if self.quota is None:
            return None
        if self.send_at is None:
            return quota_remaining(self.quota)
        return None if self.quota.max_24_hour_send < 0 else self.quota.max_24_hour_send

    @property
    def quota_covers(self) -> bool | None:
        left = self.quota_left
        if self.quota is None:
            return None
        return left is None or left >= self.recipients


def campaign_review(*, campaign: Campaign, send_at: datetime | None) -> CampaignReview:
    """Review `campaign` as it would go out now (send_at None) or at `send_at` (aware)."""
    recipients, excluded = audience_counts(contact_list_id=campaign.contact_list_id)
    excluded_list = [(EXCLUDED_REASONS[k], n) for k, n in excluded.items() if n]
    blocked = []
    if recipients == 0:
        blocked.append(f"The list “{campaign.contact_list}” has no contact to send to.")
    if send_at is not None and send_at <= timezone.now():
        blocked.append("That time has passed: pick a time to come, or use Send now.")
    try:
        compiled = template_compile(
            template=campaign.template, tracking_base_url=settings.TRACKING_BASE_URL
        )
    except TemplateSyntaxError as err:
        blocked.append(f"The template “{campaign.template}” does not compile: {err}")
        compiled = None
    base = CampaignReview(
        send_at=send_at, recipients=recipients, excluded=excluded_list, blocked=blocked,
        send_rate=ses_send_plan().rate, quota=ses_send_quota(),
    )  # fmt: skip
    if compiled is None:
        return base
    return _with_template(base, campaign, compiled)


def _with_template(
    base: CampaignReview, campaign: Campaign, compiled: CompiledTemplate
) -> CampaignReview:
    return dataclasses.replace(
        base,
        missing_fields=_missing_fields(campaign, compiled),
        html_bytes=_html_bytes(campaign, compiled),
        links=compiled.links,
        has_unsubscribe_link=UNSUBSCRIBE_FIELD in compiled.fields,
    )


def _missing_fields(campaign: Campaign, compiled: CompiledTemplate) -> list[tuple[str, int]]:
    """(field, recipients without a value for it) for each field the template shows with no
    default, in one query (JSON key reads work alike on PostgreSQL and SQLite)."""
    nodes = compiled.subject + compiled.html + compiled.text
    names = sorted(fields_without_default(nodes) - BUILTIN_FIELDS)
    if not names:
        return []
    counts = {}
    for i, name in enumerate(names):
        if name in CONTACT_FIELDS:
            empty = Q(**{f"contact__{name}": ""})
        else:
            empty = Q(**{f"v{i}": ""})
            # JSON null too: SQLite reads it as the text "null", so ask for it as JSON (a key
            # with "__" would read as a lookup; v{i} alone covers it).
            if "__" not in name:
                empty |= Q(**{f"contact__attributes__{name}": None})
        counts[f"m{i}"] = Count("pk", filter=empty)
    members = audience_memberships(contact_list_id=campaign.contact_list_id).annotate(
        **{
            # Missing, JSON null and "" alike: Coalesce, not isnull, which on SQLite means
            # "no such key" only.
            f"v{i}": Coalesce(
                KeyTextTransform(name, "contact__attributes"), Value(""), output_field=TextField()
            )
            for i, name in enumerate(names)
            if name not in CONTACT_FIELDS
        }
    )
    found = members.aggregate(**counts)
    return [(name, found[f"m{i}"]) for i, name in enumerate(names) if found[f"m{i}"]]


def _html_bytes(campaign: Campaign, compiled: CompiledTemplate) -> int:
    """The HTML's size as sent to the first recipient (tracking and unsubscribe link in)."""
    member = (
        audience_memberships(contact_list_id=campaign.contact_list_id)
        .select_related("contact")
        .order_by("contact_id")
        .first()
    )
    data = {}
    if member is not None:
        contact = member.contact
        data = contact_merge_data(
            email=contact.email, first_name=contact.first_name, last_name=contact.last_name,
            attributes=contact.attributes, fields=compiled.fields - BUILTIN_FIELDS,
        )  # fmt: skip
    [data[TOKEN_FIELD]] = tokens_for([_SAMPLE_NOTIFICATION_ID])
    [data[UNSUBSCRIBE_FIELD]] = unsubscribe_urls_for([_SAMPLE_NOTIFICATION_ID])
    return len(compiled.render(data).html.encode())
