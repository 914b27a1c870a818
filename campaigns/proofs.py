"""Test sends ("proofs"): a campaign's or a template's message, rendered for one contact and
sent to a few proof addresses through the campaign's own send path, and never recorded.

The proof goes through the senders a batch uses (campaigns.senders: bulk with a stored
template and SendBulkEmail, or rendered with SendEmail), with the campaign's sender, headers
and template as it would be frozen, so what arrives is what recipients get, but for:
- the subject, marked with PROOF_SUBJECT_PREFIX;
- its links, which point straight at their destinations, with no open pixel: a proof has no
  ledger row to record a hit against, and a draft has no recorded links for a click URL to
  redirect to, so untracked links are what lets a proof's reader check every link while
  nothing about it can reach a report (the template is still compiled with tracking first,
  so one the campaign could not send is refused here too);
- its unsubscribe link and List-Unsubscribe header, PROOF_UNSUBSCRIBE_PATH: not a token, so
  the unsubscribe page answers that the link is not valid and nobody is unsubscribed;
- no configuration set, so SES publishes no events about it (they would name a message the
  ledger does not know, and wait among the pending events until they expire).
No ledger row, no counter, no campaign status changes. It runs in the request: at most
PROOF_MAX_ADDRESSES recipients are one SES call (bulk) or ten (rendered, in parallel), within
the SES client's timeouts, after a slot of the shared SES rate limit.
"""

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError

from campaigns.addresses import InvalidAddress, address_normalize
from campaigns.ledger import ClaimedRow
from campaigns.messages import shared_headers
from campaigns.models import Campaign, Contact
from campaigns.ratelimit import RateLimitUnavailable, ses_rate_limiter
from campaigns.senders import BulkSender, GroupOutcome, RenderedSender
from campaigns.ses import SesError, SesRejected, ses_template_ensure
from campaigns.tokens import UNSUBSCRIBE_PATH
from templates_app.language import TemplateSyntaxError, Text
from templates_app.models import Template
from templates_app.services import CompiledTemplate, template_compile, template_snapshot

logger = logging.getLogger(__name__)

PROOF_MAX_ADDRESSES = 10
PROOF_SUBJECT_PREFIX = "[Test] "
# How long a proof waits for its slot behind a running campaign's sends before giving up: a
# web request, and the marketer is watching it.
PROOF_RATE_WAIT_SECONDS = 5.0
# The longest a proof may take at the account's own pace (a sandbox account's 1 a second paces
# proofs at 0.5 a second, ten addresses taking 18 s): past it, fewer addresses are asked for.
PROOF_MAX_OWN_WAIT_SECONDS = 10.0
# A proof's unsubscribe link: not a token (tracking.unsubscribe answers "not valid").
PROOF_UNSUBSCRIBE_PATH = f"{UNSUBSCRIBE_PATH}test-send"
# Stands in for the tracking token a proof's template data carries (its links are not tracked,
# so nothing reads it; never a notification's).
_PROOF_TOKEN = "test-send"  # noqa: S105 (not a secret)


class ProofError(Exception):
    """The test cannot be sent; the message says why, for the marketer. Nothing was sent."""


@dataclass(frozen=True)
class ProofResult:
    """What SES made of a test send: how many addresses it accepted, and why not the rest."""

    addresses: int
    accepted: int
    problems: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        if self.accepted == self.addresses:
            return f"Test sent: Amazon SES accepted it for {_addresses(self.accepted)}."
        head = f"Amazon SES accepted the test for {self.accepted} of {_addresses(self.addresses)}."
        return " ".join((head, *self.problems))


def _addresses(count: int) -> str:
    return f"{count} address" if count == 1 else f"{count} addresses"


def proof_addresses_check(raw: str) -> list[str]:
    """The addresses typed (separated by commas), each under the one address rule, without
    repeats; ProofError with the reason for none, too many, or one that cannot be sent."""
    if len(raw) > PROOF_MAX_ADDRESSES * 260:  # ten of the longest addresses, and their commas
        raise ProofError(f"That is too long for {PROOF_MAX_ADDRESSES} addresses.")
    parts = [part.strip() for part in raw.split(",")]
    parts = [part for part in parts if part]
    if not parts:
        raise ProofError("Enter at least one address to send the test to.")
    if len(parts) > PROOF_MAX_ADDRESSES:
        raise ProofError(
            f"A test goes to at most {PROOF_MAX_ADDRESSES} addresses; you entered {len(parts)}."
        )
    addresses = []
    for part in parts:
        try:
            addresses.append(address_normalize(part))
        except InvalidAddress as err:
            shown = part if len(part) <= 80 else part[:80] + "…"
            raise ProofError(f"“{shown}” cannot receive a test: {' '.join(err.messages)}") from None
    return list(dict.fromkeys(addresses))


def proof_contact(*, wanted: str, campaign: Campaign | None) -> Contact | None:
    """The contact a proof is rendered for: the one named by id or address, else the first
    member of the campaign's list (the first contact, for a template alone); None if there is
    none. ProofError if the one named does not exist."""
    wanted = wanted.strip()
    contacts = Contact.objects.order_by("id")
    if not wanted:
        if campaign is not None and campaign.contact_list_id:
            contacts = contacts.filter(membership__contact_list_id=campaign.contact_list_id)
        return contacts.first()
    found = None
    if len(wanted) > 320:  # longer than any address
        raise ProofError("That is not a contact's id or address: it is too long.")
    if wanted.isascii() and wanted.isdigit():
        found = contacts.filter(pk=int(wanted)).first() if len(wanted) < 19 else None  # bigint
    else:
        try:
            found = contacts.filter(email=address_normalize(wanted)).first()
        except ValidationError:
            found = None
    if found is None:
        raise ProofError("No contact has that id or address: leave it empty for the first one.")
    return found


def proof_send(
    *,
    to: list[str],
    contact: Contact | None,
    campaign: Campaign | None = None,
    template: Template | None = None,
) -> ProofResult:
    """Send the campaign's message (or the template's, by the default path and sender),
    rendered for `contact` (empty fields for None), to each address of `to` (as
    proof_addresses_check gives them). ProofError, having sent nothing, if it cannot go."""
    if not 1 <= len(to) <= PROOF_MAX_ADDRESSES:
        raise ProofError(f"A test goes to 1 to {PROOF_MAX_ADDRESSES} addresses.")
    if campaign is not None:
        snapshot = campaign.template_snapshot or template_snapshot(template=campaign.template)
    else:
        snapshot = template_snapshot(template=template)
        campaign = Campaign(template=template)  # unsaved: the default path and sender
    compiled = _proof_compiled(snapshot)
    rows = [
        ClaimedRow(
            id=index,
            contact_id=contact.pk if contact else 0,
            email=contact.email if contact else "",
            first_name=contact.first_name if contact else "",
            last_name=contact.last_name if contact else "",
            attributes=contact.attributes if contact else {},
            skip_reason="",
        )
        for index in range(len(to))
    ]
    bulk = campaign.send_path != Campaign.SendPath.RENDERED
    try:
        sender_class = _ProofBulkSender if bulk else _ProofRenderedSender
        sender = sender_class(campaign, compiled, to=to)
    except ValueError:
        raise ProofError(
            "The sender (From) cannot be used: correct it on the campaign first."
        ) from None
    _take_send_slots(len(to))
    if bulk:
        sender.template_name = _proof_stored_template(compiled)
    outcome = sender.send(rows)
    result = _result(outcome, addresses=len(to))
    logger.info(
        "test send campaign=%s template=%s contact=%s path=%s addresses=%d accepted=%d",
        campaign.pk, template.pk if template else campaign.template_id,
        contact.pk if contact else None, "bulk" if bulk else "rendered", len(to), result.accepted,
    )  # fmt: skip
    return result


def _proof_compiled(snapshot: dict[str, str]) -> CompiledTemplate:
    """The template compiled for a proof: untracked links, subject marked. Checked first as the
    campaign's start compiles it (with tracking), so a proof never passes what the send refuses."""
    try:
        template_compile(template=snapshot, tracking_base_url=settings.TRACKING_BASE_URL)
        compiled = template_compile(template=snapshot, tracking_base_url=None)
    except TemplateSyntaxError as err:
        raise ProofError(f"The template cannot be sent: {err}") from None
    return dataclasses.replace(compiled, subject=(Text(PROOF_SUBJECT_PREFIX), *compiled.subject))


def _take_send_slots(count: int) -> None:
    """Wait for `count` recipients' worth of the shared SES rate (campaigns.ratelimit), as a
    batch does, for no longer than the proof's own pace needs plus PROOF_RATE_WAIT_SECONDS;
    ProofError if that is not enough, or the proof alone would hold the page too long."""
    try:
        limiter, plan = ses_rate_limiter()
        own_wait = max(0.0, (count - plan.burst) / plan.rate)
        if own_wait > PROOF_MAX_OWN_WAIT_SECONDS:
            raise ProofError(
                f"At your Amazon SES account's sending rate ({plan.max_rate:g} a second) a test "
                f"to {count} addresses takes {math.ceil(own_wait)} seconds: send it to fewer "
                "addresses at once."
            )
        granted = limiter.acquire(count, timeout=own_wait + PROOF_RATE_WAIT_SECONDS)
    except RateLimitUnavailable:  # GetAccount failing is not it: the rate falls back to 1/s
        raise ProofError(
            "The shared sending rate could not be checked (Redis is not answering). "
            "Nothing was sent; try again in a minute."
        ) from None
    if not granted:
        raise ProofError(
            "Campaigns are using the whole SES sending rate right now. Nothing was sent; "
            "try again in a minute."
        )


def _proof_stored_template(compiled: CompiledTemplate) -> str:
    """The SES stored template a bulk proof sends with, created if missing. Named by its content
    (`<prefix>-proof-<12 hex>`), so every proof of the same content reuses one, and none is
    ever a campaign's (`<prefix>-c<id>-…`)."""
    content = compiled.handlebars()
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{settings.SES_TEMPLATE_PREFIX}-proof-{digest}"
    try:
        ses_template_ensure(
            name=name, subject=content["Subject"], html=content["Html"], text=content["Text"]
        )
    except SesRejected as err:
        raise ProofError(f"Amazon SES refused the test's template: {err.reason}") from None
    except SesError as err:
        raise ProofError(
            f"Amazon SES could not be reached ({err.reason}). Nothing was sent; try again."
        ) from None
    return name


def _result(outcome: GroupOutcome, *, addresses: int) -> ProofResult:
    problems = []
    if outcome.campaign_refused:
        problems.append(f"Amazon SES refused it: {outcome.campaign_refused}.")
    elif outcome.retry:
        problems.append(
            f"Not sent to {_addresses(len(outcome.retry))}: Amazon SES was busy or could not "
            "be reached. Try again in a minute."
        )
    failed = [reason for verdict, reason in outcome.errors.values() if verdict == "failed"]
    unknown = [reason for verdict, reason in outcome.errors.values() if verdict != "failed"]
    if failed:
        reasons = "; ".join(dict.fromkeys(failed))
        problems.append(f"Refused for {_addresses(len(failed))}: {reasons}.")
    if unknown:
        reasons = "; ".join(dict.fromkeys(unknown))
        problems.append(
            f"For {_addresses(len(unknown))} Amazon SES did not answer clearly ({reasons}): "
            "the test may or may not arrive."
        )
    accepted = len(outcome.accepted)
    return ProofResult(addresses=addresses, accepted=accepted, problems=tuple(problems))


class _ProofAddressing:
    """What makes one of the campaign's senders send proofs: each row goes to its proof address
    (rows are numbered 0…n-1), with links that name no notification, headers without the
    campaign id of an unsaved campaign, and no configuration set (no SES events)."""

    def _proof_setup(self, campaign: Campaign, to: list[str]) -> None:
        self.proof_to = to
        self.configuration_set = None
        headers = shared_headers(campaign)
        if campaign.pk is None:
            headers.pop("X-Campaign")
        self.headers = headers

    def _addressing(self, rows: list[ClaimedRow]) -> tuple[list[str], list[str], list[str]]:
        url = f"{settings.TRACKING_BASE_URL}{PROOF_UNSUBSCRIBE_PATH}"
        to = [self.proof_to[row.id] for row in rows]
        return to, [_PROOF_TOKEN] * len(rows), [url] * len(rows)


class _ProofBulkSender(_ProofAddressing, BulkSender):
    def __init__(self, campaign: Campaign, compiled: CompiledTemplate, *, to: list[str]) -> None:
        super().__init__(campaign, compiled)
        self._proof_setup(campaign, to)
        self.headers = tuple(self.headers.items())


class _ProofRenderedSender(_ProofAddressing, RenderedSender):
    def __init__(self, campaign: Campaign, compiled: CompiledTemplate, *, to: list[str]) -> None:
        super().__init__(campaign, compiled)
        self._proof_setup(campaign, to)
