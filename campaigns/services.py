"""Writes with rules: contacts, lists and the campaign life cycle.

Every campaign status change goes through campaign_transition, a guarded UPDATE. Celery tasks
are enqueued once their transaction commits (infra.tasks), so a worker never looks for a row that
isn't there.
"""

import functools
import logging
import re
import uuid
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    CharField,
    DateTimeField,
    Exists,
    F,
    OuterRef,
    Q,
    Value,
)
from django.utils import timezone

from campaigns import jobs, ledger, waves
from campaigns.addresses import InvalidAddress, address_normalize, sender_header
from campaigns.counters import HANDED_OFF, counters_add, counters_sum
from campaigns.models import (
    Campaign,
    CampaignLink,
    ContactList,
    Membership,
    Notification,
)
from campaigns.selectors import audience_memberships
from campaigns.ses import SesError, SesRejected, ses_template_ensure
from infra.tasks import task_enqueue_on_commit
from templates_app.language import TemplateSyntaxError
from templates_app.render import merge_value
from templates_app.services import template_compile, template_snapshot

logger = logging.getLogger(__name__)

DELIVER_BATCH = "campaigns.tasks.deliver_batch"  # the task a batch of the ledger goes out by

C = Campaign.Status
N = Notification.Status

# The campaign state machine: status → statuses it may move to.
TRANSITIONS: dict[str, set[str]] = {
    C.DRAFT: {C.SCHEDULED, C.CANCELLED},
    C.SCHEDULED: {C.DRAFT, C.SENDING, C.CANCELLED, C.FAILED},
    C.SENDING: {C.PAUSED, C.SENT, C.CANCELLED, C.FAILED},
    C.PAUSED: {C.SENDING, C.CANCELLED},
}

# A batch is this many notifications: 10 SendBulkEmail calls of 50, a few seconds of work, so
# pausing takes effect quickly and a crashed batch strands few rows.
BATCH_SIZE = 500
# Members frozen into the ledger per transaction: small enough that each chunk's batches start
# while the rest is written and a crash redoes little (cost: docs/PERFORMANCE.md).
FREEZE_CHUNK = 50_000
# …and a smaller first chunk, so the first batches go out right after the start.
FIRST_FREEZE_CHUNK = 5_000


class CampaignError(Exception):
    """A campaign action that cannot be done; the message is for the marketer."""


class CampaignStateError(CampaignError):
    """The action's move is one the state machine refuses from the campaign's status now
    (`status`, read after the guarded UPDATE refused it): the API's 409 invalid_transition,
    apart from a campaign that cannot be sent as it stands (a plain CampaignError)."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class CampaignAudienceChanged(CampaignError):
    """The audience is not the size the caller confirmed (the admin's review button, the
    API's `expected_recipients`): `recipients` is its size now. Nothing was changed."""

    def __init__(self, *, expected: int, recipients: int) -> None:
        super().__init__(
            f"The audience changed: {recipients:,} recipients now, not the {expected:,} "
            "confirmed. Check it and confirm again."
        )
        self.expected, self.recipients = expected, recipients


def _state_refused(campaign: Campaign, message: str) -> CampaignStateError:
    """The refusal of a guarded move, with the status that refused it (read now: the caller's
    copy may be older than the UPDATE that found another status)."""
    status = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).first()
    return CampaignStateError(message.format(status=status), status=status or "")


# -- contacts ---------------------------------------------------------------------------------

_ATTRIBUTE_NAME = re.compile(r"[^a-z0-9]+")


def contact_normalize_email(email: str) -> str:
    """The address as stored and sent (campaigns.addresses: trimmed, ASCII domain, lower-cased);
    raises InvalidAddress (a ValidationError) with the reason for one the sender cannot send."""
    return address_normalize(email)


def contact_attribute_name(column: str) -> str | None:
    """A CSV column name as a template field name ("First Name" → first_name), or None."""
    name = _ATTRIBUTE_NAME.sub("_", column.strip().lower()).strip("_")
    return name if name and name[0].isalpha() else None


def contact_merge_data(
    *, email: str, first_name: str, last_name: str, attributes: dict, fields: Iterable[str]
) -> dict[str, str]:
    """The template data of one contact, limited to the fields the template reads."""
    known = {"email": email, "first_name": first_name, "last_name": last_name}
    data = {}
    for field in fields:
        value = known[field] if field in known else attributes.get(field)
        data[field] = merge_value(value)
    return data


def contact_list_add(*, contact_list: ContactList, contact_ids: Iterable[int]) -> None:
    Membership.objects.bulk_create(
        [Membership(contact_list=contact_list, contact_id=cid) for cid in contact_ids],
        ignore_conflicts=True,
        batch_size=1000,
    )


# -- campaign life cycle ----------------------------------------------------------------------


def campaign_transition(
    *,
    campaign_id: int,
    from_statuses: Iterable[str],
    to: str,
    reason: str = "",
    when: Q | None = None,
    **fields,
) -> bool:
    """Move the campaign to `to` if it is in one of `from_statuses` (and matches `when`), in one
    guarded UPDATE; True if it moved. The only writer of Campaign.status."""
    from_statuses = set(from_statuses)
    for status in from_statuses:
        if to not in TRANSITIONS.get(status, ()):
            raise ValueError(f"campaign transition {status} → {to} is not allowed")
    rows = Campaign.objects.filter(pk=campaign_id, status__in=from_statuses)
    if when is not None:
        rows = rows.filter(when)
    moved = rows.update(status=to, status_reason=reason[:500], updated_at=timezone.now(), **fields)
    if moved:
        logger.info("campaign %s → %s", campaign_id, to)
    return bool(moved)


def campaign_check_sendable(*, campaign: Campaign) -> None:
    """Raise CampaignError with a reason if the campaign cannot be sent as it stands."""
    try:
        template_compile(template=campaign.template, tracking_base_url=None)
    except TemplateSyntaxError as err:
        raise CampaignError(f"The template “{campaign.template}” does not parse: {err}") from err
    if not audience_memberships(contact_list_id=campaign.contact_list_id).exists():
        raise CampaignError(f"The list “{campaign.contact_list}” has no active contacts.")


_ONLY_DRAFTS = "Only a draft can be sent or scheduled; this campaign is {status}."


def _draft_check(campaign: Campaign) -> None:
    """Refuse a campaign that is no longer a draft before anything else is checked: its
    status is the reason, not its list or its time (the guarded UPDATE checks again)."""
    if campaign.status != C.DRAFT:
        raise _state_refused(campaign, _ONLY_DRAFTS)


def campaign_schedule(
    *,
    campaign: Campaign,
    send_at: datetime,
    local_send_time: str = "",
    local_fallback_zone: str = "",
    expected_recipients: int | None = None,
) -> None:
    """Schedule a draft for `send_at` (aware, to come); beat starts it within seconds of that
    time. A time that has passed is refused: it would send at once, which is Send now's job
    (and its confirmation's), not a schedule's. With `expected_recipients`, refused
    (CampaignAudienceChanged) unless the audience has that many recipients now."""
    _draft_check(campaign)
    if timezone.is_naive(send_at):
        raise CampaignError("The time to send must include a time zone.")
    if send_at <= timezone.now():
        raise CampaignError(
            "That time has passed: pick a time to come, or press Send now to send at once."
        )
    _campaign_queue(
        campaign=campaign,
        send_at=send_at,
        expected_recipients=expected_recipients,
        local_send_time=local_send_time,  # campaign_schedule_local's waves, if set
        local_fallback_zone=local_fallback_zone,
    )


def campaign_schedule_local(
    *,
    campaign: Campaign,
    wall: datetime,
    fallback_zone: str,
    expected_recipients: int | None = None,
) -> None:
    """Schedule a draft to reach each contact at the naive `wall` time in their own zone
    (contacts without one: `fallback_zone`, the scheduling user's), in waves (campaigns.waves).

    Every zone's moment must be to come: one that has passed would get it late, and the
    marketer asked for a local time. So it is refused, naming the earliest zone, as a time
    that has passed is for a plain schedule.
    """
    if timezone.is_aware(wall):
        raise ValueError("a local-time schedule takes a wall-clock time without a zone")
    _draft_check(campaign)
    fallback_zone = waves.zone_or_fallback(fallback_zone, settings.TIME_ZONE)
    plan = waves.waves_plan(
        wall=wall,
        fallback_zone=fallback_zone,
        zone_counts=waves.audience_zones(contact_list_id=campaign.contact_list_id),
    )
    if not plan:
        campaign_check_sendable(campaign=campaign)  # says why: no active contacts
        raise CampaignError(f"The list “{campaign.contact_list}” has no active contacts.")
    first = plan[0]
    if first.moment <= timezone.now():
        raise CampaignError(
            f"{wall:%Y-%m-%d %H:%M} has already passed in {first.zones[0]} "
            f"({first.recipients} recipients): pick a later time, so that every contact "
            "gets it at that time in their own zone."
        )
    campaign_schedule(
        campaign=campaign,
        send_at=first.moment,
        local_send_time=waves.wall_time_text(wall),
        local_fallback_zone=fallback_zone,
        expected_recipients=expected_recipients,
    )


def campaign_send_now(*, campaign: Campaign, expected_recipients: int | None = None) -> None:
    """Start a draft now (as campaign_schedule, for now)."""
    _draft_check(campaign)
    _campaign_queue(
        campaign=campaign, send_at=timezone.now(), expected_recipients=expected_recipients
    )


def _campaign_queue(
    *, campaign: Campaign, send_at: datetime, expected_recipients: int | None, **local_time: str
) -> None:
    """Move a sendable draft to scheduled for `send_at`; a start is enqueued at once if due.
    With `expected_recipients` (the count the marketer or the integrator confirmed), only if
    the audience has that many recipients now: a list that grew or shrank since is
    refused, for the caller to look again (the admin's review, the API's 409)."""
    campaign_check_sendable(campaign=campaign)
    if expected_recipients is not None:
        recipients = audience_memberships(contact_list_id=campaign.contact_list_id).count()
        if recipients != expected_recipients:
            raise CampaignAudienceChanged(expected=expected_recipients, recipients=recipients)
    if not campaign_transition(
        campaign_id=campaign.pk,
        from_statuses={C.DRAFT},
        to=C.SCHEDULED,
        scheduled_at=send_at,
        **local_time,
    ):
        raise _state_refused(campaign, _ONLY_DRAFTS)
    if send_at <= timezone.now():
        _enqueue_start(campaign.pk)


def campaign_unschedule(*, campaign: Campaign) -> None:
    if not campaign_transition(
        campaign_id=campaign.pk,
        from_statuses={C.SCHEDULED},
        to=C.DRAFT,
        scheduled_at=None,
        local_send_time="",
        local_fallback_zone="",
    ):
        raise _state_refused(
            campaign,
            "Only a scheduled campaign that has not started can be unscheduled; "
            "this campaign is {status}.",
        )


def campaign_pause(*, campaign: Campaign) -> None:
    """Stop new claims: batches check the status before claiming; claimed rows finish."""
    if not campaign_transition(campaign_id=campaign.pk, from_statuses={C.SENDING}, to=C.PAUSED):
        raise _state_refused(
            campaign, "Only a sending campaign can be paused; this campaign is {status}."
        )


def campaign_resume(*, campaign: Campaign) -> None:
    with transaction.atomic():
        if not campaign_transition(campaign_id=campaign.pk, from_statuses={C.PAUSED}, to=C.SENDING):
            raise _state_refused(
                campaign, "Only a paused campaign can be resumed; this campaign is {status}."
            )
        campaign_fan_out(campaign_id=campaign.pk)


def campaign_cancel(*, campaign: Campaign) -> None:
    """Cancel: nothing more is claimed; unclaimed recipients are recorded as skipped."""
    with transaction.atomic():
        if not campaign_transition(
            campaign_id=campaign.pk,
            from_statuses={C.DRAFT, C.SCHEDULED, C.SENDING, C.PAUSED},
            to=C.CANCELLED,
            finished_at=timezone.now(),
            next_wave_at=None,  # waves not yet frozen never will be (campaign_freeze)
        ):
            raise _state_refused(campaign, "A {status} campaign cannot be cancelled.")
        _skip_created(campaign_id=campaign.pk, reason="campaign cancelled")
        if campaign.kind == Campaign.Kind.JOB:
            jobs.job_rows_forget(job_id=campaign.pk)  # rows not yet created never will be


def campaign_fail_sending(*, campaign_id: int, reason: str) -> bool:
    """A sending campaign that cannot go on (its frozen template no longer compiles, e.g. one
    started before the language's limits): failed with the reason, once, and its unclaimed
    rows skipped, so no batch tries again forever. True if it moved.

    A transactional stream is never failed (nor finished): the API keeps sending its
    template's messages by it. Its waiting messages fail with the reason instead (one
    content per stream: each would fail alike), and so will each later one."""
    if Campaign.objects.filter(pk=campaign_id, kind=Campaign.Kind.TRANSACTIONAL).exists():
        with transaction.atomic():
            _end_created(campaign_id=campaign_id, to=N.FAILED, reason=reason)
        logger.warning("transactional stream %s cannot send: its messages failed", campaign_id)
        return False
    with transaction.atomic():
        if not campaign_transition(
            campaign_id=campaign_id,
            from_statuses={C.SENDING},
            to=C.FAILED,
            reason=reason,
            finished_at=timezone.now(),
        ):
            return False
        _skip_created(campaign_id=campaign_id, reason="campaign failed")
    logger.warning("campaign %s failed while sending", campaign_id)
    return True


def _skip_created(*, campaign_id: int, reason: str) -> None:
    _end_created(campaign_id=campaign_id, to=N.SKIPPED, reason=reason)


def _end_created(*, campaign_id: int, to: str, reason: str) -> None:
    """The campaign's `created` rows → `to` (skipped or failed) with the reason, counted."""
    created = Notification.objects.filter(campaign_id=campaign_id, status=N.CREATED)
    moved = ledger.ledger_transition(
        ids=list(created.values_list("id", flat=True)),
        from_statuses={N.CREATED},
        to=to,
        reason=reason,
    )
    counters_add(campaign_id=campaign_id, deltas={str(to): moved})


def campaign_start(*, campaign_id: int) -> None:
    """Start a due scheduled campaign: compile, move it to sending, freeze the audience.

    The stored template is created first (idempotent, outside the transaction: it is an HTTP
    call); then one transaction moves the campaign to sending with its template snapshot and
    links. A crash before that commit leaves it scheduled, so the next start attempt redoes
    everything. The audience is then frozen chunk by chunk (campaign_freeze); a crash there
    is finished by the sweeper.

    A campaign that cannot start as it stands (its template or sender refused, here or by
    SES) ends `failed` with the reason, once. One that meets SES unavailable stays scheduled,
    with the reason shown, and beat tries again (CAMPAIGN_START_POLL_SECONDS).
    """
    campaign = Campaign.objects.select_related("template").get(pk=campaign_id)
    if campaign.status != C.SCHEDULED:
        return
    try:
        # A bulk job sends the template as it was when the job was accepted (campaigns.jobs).
        snapshot = (
            campaign.template_snapshot
            if campaign.kind == Campaign.Kind.JOB
            else template_snapshot(template=campaign.template)
        )
        compiled = template_compile(template=snapshot, tracking_base_url=settings.TRACKING_BASE_URL)
        name = compiled.ses_template_name(
            prefix=settings.SES_TEMPLATE_PREFIX, campaign_id=campaign_id
        )
        content = compiled.handlebars()
        sender_header(campaign.from_email or settings.DEFAULT_FROM_EMAIL)
    except TemplateSyntaxError as err:
        _start_failed(campaign_id, f"The template does not parse: {err}")
        return
    except InvalidAddress as err:
        _start_failed(campaign_id, " ".join(err.messages))
        return
    except Exception as err:  # noqa: BLE001 (whatever it is, it will fail again: say so once)
        logger.exception("campaign %s start failed compiling its template", campaign_id)
        _start_failed(campaign_id, f"The template could not be compiled ({type(err).__name__}).")
        return
    try:
        if not campaign.test_mode:  # a test key's job (campaigns.jobs) never reaches SES
            ses_template_ensure(
                name=name, subject=content["Subject"], html=content["Html"], text=content["Text"]
            )
    except SesRejected as err:
        _start_failed(campaign_id, f"SES refused the campaign's template: {err.reason}")
        return
    except SesError as err:  # throttled, unreachable, or no answer: try again shortly
        logger.warning("campaign %s start waits for SES: %s", campaign_id, type(err).__name__)
        Campaign.objects.filter(pk=campaign_id, status=C.SCHEDULED).update(
            status_reason=f"Waiting for SES to store the template ({err.reason}); retrying."[:500]
        )
        return

    with transaction.atomic():
        if not campaign_transition(
            campaign_id=campaign_id,
            from_statuses={C.SCHEDULED},
            to=C.SENDING,
            started_at=timezone.now(),
            ses_template_name=name,
            template_snapshot=snapshot,
        ):
            return
        CampaignLink.objects.bulk_create(
            [
                CampaignLink(campaign_id=campaign_id, index=i, url=url)
                for i, url in enumerate(compiled.links)
            ]
        )
    campaign_freeze(campaign_id=campaign_id)


def _start_failed(campaign_id: int, reason: str) -> None:
    if campaign_transition(
        campaign_id=campaign_id, from_statuses={C.SCHEDULED}, to=C.FAILED, reason=reason
    ):
        logger.warning("campaign %s failed to start", campaign_id)


def campaign_freeze(*, campaign_id: int) -> int:
    """Freeze the audience into the ledger, FREEZE_CHUNK members per transaction, enqueueing
    each chunk's batches as it commits; then mark the campaign frozen. Returns the recipients.

    Why chunks: one INSERT … SELECT of a million rows holds the first send back until all of it,
    and its commit (deferred foreign-key checks), are done (docs/PERFORMANCE.md). Chunked, the
    first batches send while the rest is written. Safe to run again (after a crash, from the
    sweeper): the ledger's unique (campaign, contact) makes every insert idempotent and claims
    are guarded, and the campaign cannot finish before `frozen_at` is set.

    A bulk job's audience is its staged rows, JOB_CHUNK at a time after its checkpoint
    (campaigns.jobs); a transactional stream has none (it is never frozen nor finished).
    """
    campaign = Campaign.objects.values(
        "kind", "contact_list_id", "local_send_time", "local_fallback_zone", "frozen_at",
        "recipient_count",
    ).get(pk=campaign_id)  # fmt: skip
    if campaign["kind"] == Campaign.Kind.TRANSACTIONAL:
        # A stream has no audience and is never finished; the sweeper's stalled-freeze check
        # (sending, never frozen) would otherwise freeze it empty and mark it sent.
        return 0
    if campaign["frozen_at"] is not None:
        # Frozen already: a freeze enqueued twice (the sweeper's, while the first was still
        # queued behind batches) must not add members who joined the list since.
        return campaign["recipient_count"]
    # A local-time campaign freezes only the zones whose moment has come; the rest wait for
    # their wave (campaign_waves_start_due), and it is frozen once no wave is left.
    zones, next_wave_at, waiting = None, None, 0
    if campaign["local_send_time"]:
        zones, next_wave_at, waiting = waves.waves_due(
            wall=waves.wall_time_parse(campaign["local_send_time"]),
            fallback_zone=campaign["local_fallback_zone"],
            zone_counts=waves.audience_zones(contact_list_id=campaign["contact_list_id"]),
            now=timezone.now(),
        )
    holder = None
    if campaign["kind"] == Campaign.Kind.JOB:
        # One creator at a time, under a lease renewed before each chunk: a killed one is
        # resumed by the sweeper within seconds of its lease running out (campaigns.jobs).
        holder = uuid.uuid4().hex
        if not jobs.job_creation_lease_take(job_id=campaign_id, holder=holder):
            logger.info("job %s creation runs elsewhere: not doubled", campaign_id)
            return 0
        chunks = _job_chunks(campaign_id)
    else:
        chunks = _audience_chunks(campaign_id, campaign["contact_list_id"], zones)
    for write_chunk in chunks:
        if not _freezing(campaign_id):
            return 0  # cancelled (or failed) meanwhile: nothing more goes into its ledger
        if holder and not jobs.job_creation_lease_take(job_id=campaign_id, holder=holder):
            logger.warning("job %s creation taken over (lease ran out): stopping", campaign_id)
            return 0
        with transaction.atomic():
            ids = write_chunk()
            if ids:
                # A local-time campaign's count already holds its waiting waves: set at the end.
                grown = (
                    {}
                    if campaign["local_send_time"]
                    else {"recipient_count": F("recipient_count") + len(ids)}
                )
                Campaign.objects.filter(pk=campaign_id).update(updated_at=timezone.now(), **grown)
                _enqueue_batches(campaign_id, ids)
    if next_wave_at is not None:
        # Waves wait: the report counts their recipients as pending; beat freezes the next.
        count = Notification.objects.filter(campaign_id=campaign_id).count()
        Campaign.objects.filter(pk=campaign_id, frozen_at=None).update(
            recipient_count=count + waiting, next_wave_at=next_wave_at, updated_at=timezone.now()
        )
        logger.info("campaign %s wave frozen recipients=%s waiting=%s", campaign_id, count, waiting)
        return count
    if not _freezing(campaign_id):
        return 0  # (a job cancelled before any chunk was left: its staged rows are gone)
    with transaction.atomic():
        count = Notification.objects.filter(campaign_id=campaign_id).count()
        Campaign.objects.filter(pk=campaign_id).update(
            recipient_count=count, frozen_at=timezone.now()
        )
        if campaign["kind"] == Campaign.Kind.JOB:
            jobs.job_rows_forget(job_id=campaign_id)  # every row has its ledger row now
            jobs.job_creation_lease_drop(job_id=campaign_id)
    logger.info("campaign %s frozen recipients=%s", campaign_id, count)
    # Its batches may all have finished already (a small campaign; eager tasks): they could
    # not finish the campaign before frozen_at was set, so finish it here.
    campaign_finish_if_done(campaign_id=campaign_id)
    return count


def _freezing(campaign_id: int) -> bool:
    """Whether the campaign may still be frozen: sending or paused, not cancelled or failed."""
    status = Campaign.objects.values_list("status", flat=True).get(pk=campaign_id)
    return status in (C.SENDING, C.PAUSED)


def _audience_chunks(campaign_id: int, contact_list_id: int, zones: list[str] | None):
    """The list's members as chunks to freeze: a function per chunk writing its rows (in the
    freeze's transaction) and returning their ids, contact ids bounding each chunk."""
    m = Membership._meta.db_table
    lower: int | None = 0  # contact ids start at 1
    while lower is not None:
        with connection.cursor() as cursor:  # where this chunk ends, from the membership index
            cursor.execute(
                f"SELECT contact_id FROM {m} WHERE contact_list_id = %s AND contact_id >= %s "  # noqa: S608
                "ORDER BY contact_id LIMIT 1 OFFSET %s",
                [contact_list_id, lower, FIRST_FREEZE_CHUNK if lower == 0 else FREEZE_CHUNK],
            )
            upper = (cursor.fetchone() or [None])[0]
        yield functools.partial(
            _freeze_audience,
            campaign_id=campaign_id,
            contact_list_id=contact_list_id,
            contact_ids=(lower, upper),
            zones=zones,
        )
        lower = upper


def _job_chunks(job_id: int):
    """A bulk job's staged rows as chunks to freeze (campaigns.jobs), as _audience_chunks."""
    for first_row, last_row in jobs.job_chunks(job_id=job_id):
        yield functools.partial(
            jobs.job_rows_freeze, job_id=job_id, first_row=first_row, last_row=last_row
        )


def _freeze_audience(
    *,
    campaign_id: int,
    contact_list_id: int,
    contact_ids: tuple[int, int | None],
    zones: list[str] | None = None,
) -> list[int]:
    """One INSERT … SELECT for the members with contact ids in [first, upper) (upper None: to
    the end): a `created` row per active member, no Python loop over contacts. Returns the
    new rows' ids, in order.

    Who: selectors.audience_memberships, the one audience rule. With `zones`, only contacts
    whose stored time zone is one of them (a local-time campaign's due waves).
    """
    first, upper = contact_ids
    now = timezone.now()
    members = audience_memberships(contact_list_id=contact_list_id).filter(contact_id__gte=first)
    if upper is not None:
        members = members.filter(contact_id__lt=upper)
    if zones is not None:
        members = members.filter(contact__time_zone__in=zones)
    # The SELECT comes from the audience rule itself, so the freeze cannot drift from what
    # the review counted; the row is built in SQL (one INSERT … SELECT, no Python loop).
    columns = {
        "n_campaign": Value(campaign_id, output_field=BigIntegerField()),
        "n_status": Value(N.CREATED, output_field=CharField()),
        "n_reason": Value("", output_field=CharField()),
        "n_created": Value(now, output_field=DateTimeField()),
        "n_updated": Value(now, output_field=DateTimeField()),
    }
    select = (
        members.annotate(**columns)
        .order_by("contact_id")
        .values_list("n_campaign", "contact_id", "n_status", "n_reason", "n_created", "n_updated")
    )
    select_sql, params = select.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Notification._meta.db_table} "  # noqa: S608
            f"(campaign_id, contact_id, status, reason, created_at, updated_at) {select_sql} "
            "ON CONFLICT DO NOTHING RETURNING id",
            params,
        )
        return sorted(row[0] for row in cursor.fetchall())


def _enqueue_batches(campaign_id: int, ids: list[int]) -> int:
    """A deliver_batch per BATCH_SIZE of these (sorted) ids, by id range, after the commit."""
    ranges = [
        (ids[i], ids[min(i + BATCH_SIZE, len(ids)) - 1]) for i in range(0, len(ids), BATCH_SIZE)
    ]

    task_enqueue_on_commit(DELIVER_BATCH, *((campaign_id, first, last) for first, last in ranges))
    return len(ranges)


def campaign_fan_out(*, campaign_id: int) -> int:
    """Enqueue a deliver_batch per BATCH_SIZE `created` rows, by id range; returns how many."""
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT MIN(id), MAX(id) FROM ("  # noqa: S608
            f"  SELECT id, (ROW_NUMBER() OVER (ORDER BY id) - 1) / %s AS bucket FROM {table}"
            "   WHERE campaign_id = %s AND status = %s"
            ") AS numbered GROUP BY bucket ORDER BY 1",
            [BATCH_SIZE, campaign_id, N.CREATED],
        )
        ranges = cursor.fetchall()

    task_enqueue_on_commit(DELIVER_BATCH, *((campaign_id, first, last) for first, last in ranges))
    return len(ranges)


def _enqueue_start(campaign_id: int) -> None:
    task_enqueue_on_commit("campaigns.tasks.campaign_start", (campaign_id,))


def campaigns_start_due() -> list[int]:
    """Enqueue the start of every scheduled campaign whose time has come (beat, every 10 s)."""
    due = list(
        Campaign.objects.filter(status=C.SCHEDULED, scheduled_at__lte=timezone.now())
        .order_by("scheduled_at")
        .values_list("id", flat=True)
    )
    for campaign_id in due:
        _enqueue_start(campaign_id)
    return due


def campaign_waves_start_due() -> list[int]:
    """Enqueue the freeze of every local-time campaign whose next wave has come (beat, with
    campaigns_start_due). Taking the wave clears next_wave_at in a guarded UPDATE, so two
    beats never freeze it twice; a freeze that dies after that is a stalled freeze, which the
    sweeper finishes (campaigns.sweeper._refreeze_stalled)."""
    now = timezone.now()
    due = Campaign.objects.filter(
        status__in=[C.SENDING, C.PAUSED], frozen_at=None, next_wave_at__lte=now
    )
    taken = []
    for campaign_id in due.order_by("next_wave_at").values_list("id", flat=True):
        if Campaign.objects.filter(pk=campaign_id, next_wave_at__lte=now).update(
            next_wave_at=None, updated_at=now
        ):
            task_enqueue_on_commit("campaigns.tasks.campaign_freeze", (campaign_id,))
            taken.append(campaign_id)
    return taken


def campaign_finish_if_answered(*, campaign_id: int) -> bool:
    """After a batch: finish the campaign (campaign_finish_if_done: the ledger decides) once
    its counters say every frozen row has an answer; True if it finished.

    Why not ask the ledger after every batch: with no status index, that check reads the
    campaign's rows up to the first unanswered one, which at the end of a campaign is all of
    them, once per batch (docs/decisions/0002-ledger-without-status-index.md). The counters
    are one indexed read. They are written with the rows they count, so they do not drift; if
    they ever did, the sweeper's own ledger check (every 10 s) still finishes the campaign.
    """
    audience = (
        Campaign.objects.filter(pk=campaign_id, status=C.SENDING, frozen_at__isnull=False)
        .values_list("recipient_count", flat=True)
        .first()
    )
    if audience is None:
        return False
    if counters_sum(campaign_id=campaign_id, names=HANDED_OFF) < audience:
        return False
    return campaign_finish_if_done(campaign_id=campaign_id)


def campaign_finish_if_done(*, campaign_id: int) -> bool:
    """Mark a sending campaign sent once its audience is frozen and no row is created or
    sending; True if it finished.

    Never earlier: a campaign is finished by what its ledger says, not by counting batches.
    Never a transactional stream (no frozen audience either: it sends as long as the API
    does).
    """
    pending = Notification.objects.filter(
        campaign_id=OuterRef("pk"), status__in=[N.CREATED, N.SENDING]
    )
    return campaign_transition(
        campaign_id=campaign_id,
        from_statuses={C.SENDING},
        to=C.SENT,
        when=Q(frozen_at__isnull=False)
        & ~Q(kind=Campaign.Kind.TRANSACTIONAL)
        & ~Q(Exists(pending)),
        finished_at=timezone.now(),
    )
