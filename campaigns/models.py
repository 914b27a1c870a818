"""Audiences (contacts, lists), campaigns and the notification ledger.

Models hold data only: every write with rules goes through campaigns.services, every status
change through its one guarded function.
"""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from infra.db import BrinIndexPortable, JsonContainsIndexPortable


class Contact(models.Model):
    class Status(models.TextChoices):
        # Values are what the database and the API keep; labels are what a marketer reads.
        ACTIVE = "active", "Gets mail"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed from all mail"
        BOUNCED = "bounced", "Bounced (address does not exist)"  # hard bounce
        COMPLAINED = "complained", "Marked an email as spam"

    # Normalized by contact_normalize_email (trimmed, lower-cased): unique regardless of case.
    email = models.EmailField(max_length=254, unique=True)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    # Custom fields for personalization: flat {name: value} (names as in templates).
    attributes = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # An IANA name (Europe/Paris) for "send at this local time"; empty: not known, and such a
    # contact gets a local-time campaign at the time in the scheduling user's zone.
    time_zone = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by every write that changes the contact (auto_now for the ORM's saves, explicitly by
    # the set-based upserts): the API's ?updated_since= reads it, through contact_updated.
    updated_at = models.DateTimeField(auto_now=True)
    # Erased (tracking.erase): personal data removed, the row kept because the ledger names
    # it. An erased contact is nobody's: the API, the admin and every audience leave it out.
    erased_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The few contacts who get no mail, for a list's counts (campaigns.audiences).
            models.Index(
                fields=["status"],
                condition=~models.Q(status="active"),
                name="contact_not_active",
            ),
            # GET /api/v1/contacts?updated_since=: a sync reads only what changed since.
            models.Index(fields=["updated_at", "id"], name="contact_updated"),
            # GET /api/v1/contacts?attr.city=Paris: `attributes @> {"city": "Paris"}`.
            JsonContainsIndexPortable(field="attributes", name="contact_attributes_gin"),
        ]

    def __str__(self) -> str:
        return f"Contact #{self.pk}"


class ErasedAddress(models.Model):
    """What is kept of an unsubscribed or suppressed contact's address once it is erased
    (tracking.erase): its digest (campaigns.erased.address_digest), never the address, and
    the status it had, so the address stays unsubscribed or suppressed if it comes back (an
    import, an upsert, a message to it): campaigns.erased gives its new contact this status."""

    digest = models.CharField(max_length=64, primary_key=True)
    status = models.CharField(max_length=16, choices=Contact.Status.choices)
    erased_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "erased address"

    def __str__(self) -> str:
        return f"erased address {self.digest[:12]}"


class ContactList(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    contacts = models.ManyToManyField(Contact, through="Membership", related_name="lists")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    contact_list = models.ForeignKey(ContactList, on_delete=models.CASCADE)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)
    # Unsubscribed from this list only (from all mail: Contact.status). Kept, not deleted, so
    # a re-import of the same CSV cannot subscribe them again.
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["contact_list", "contact"], name="uniq_membership")
        ]
        indexes = [
            # Who left each list, for its counts (campaigns.audiences), without reading every
            # member's row.
            models.Index(
                fields=["contact_list", "contact"],
                condition=models.Q(unsubscribed_at__isnull=False),
                name="membership_unsubscribed",
            )
        ]

    def __str__(self) -> str:
        return f"contact {self.contact_id} in list {self.contact_list_id}"


class Campaign(models.Model):
    class Kind(models.TextChoices):
        # A marketer's campaign to a list (the admin); the API's two kinds have no list: their
        # recipients and personalisation come with the request (MessageRequest per row).
        CAMPAIGN = "campaign", "Campaign"
        # The stream a template's transactional messages go out by (POST /api/v1/messages):
        # one per template content and mode, always `sending`, never finished.
        TRANSACTIONAL = "transactional", "Transactional messages"
        JOB = "job", "Bulk job"  # POST /api/v1/jobs: a frozen set of rows, sent as a campaign

    class Status(models.TextChoices):
        DRAFT = "draft"
        SCHEDULED = "scheduled"
        SENDING = "sending"
        PAUSED = "paused"
        SENT = "sent"
        CANCELLED = "cancelled"
        FAILED = "failed"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CAMPAIGN)
    template = models.ForeignKey("templates_app.Template", on_delete=models.PROTECT)
    # Required for a campaign (the admin's form); empty for the API's kinds.
    contact_list = models.ForeignKey(
        ContactList, on_delete=models.PROTECT, verbose_name="List", null=True
    )
    # Sent with a test API key: every step runs but SES is never called (campaigns.simulator).
    test_mode = models.BooleanField(default=False, editable=False)
    # A transactional stream's identity: template id, mode and a digest of the template's
    # content (campaigns.transactional), so an edited template starts a new stream.
    stream_key = models.CharField(max_length=100, blank=True, editable=False)
    # The API key that made it (a job, a stream's first message).
    api_key = models.ForeignKey(
        "ApiKey", on_delete=models.SET_NULL, null=True, blank=True, editable=False, related_name="+"
    )
    from_email = models.CharField(
        "From", max_length=254, blank=True, help_text="Leave empty for the default sender."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status_reason = models.CharField("Why", max_length=500, blank=True)

    class SendPath(models.TextChoices):
        BULK = "bulk", "In batches of 50 (recommended)"
        RENDERED = "rendered", "One message at a time"

    send_path = models.CharField(
        "How it is sent",
        max_length=10,
        choices=SendPath.choices,
        default=SendPath.BULK,
        help_text="In batches is faster; one at a time suits small lists. Both send the same "
        "message.",
    )
    # The template's source as it was when the campaign started: both send paths compile this,
    # so editing the template later never changes what a running campaign sends.
    template_snapshot = models.JSONField(null=True, blank=True, editable=False)
    # The SES stored template this campaign sends with, created when it starts (immutable name).
    ses_template_name = models.CharField("SES stored template", max_length=64, blank=True)
    recipient_count = models.PositiveIntegerField("Recipients", default=0)
    # When the audience was completely frozen into the ledger. It is frozen in chunks, each
    # chunk's batches sent while the next is written; until this is set the campaign cannot
    # be finished (an empty ledger is not a sent campaign).
    frozen_at = models.DateTimeField(null=True, blank=True, editable=False)
    # "Send at this local time in each contact's time zone" (campaigns.waves): the wall-clock
    # time typed ("2030-01-31T09:00"; empty: one moment for everyone), the zone of contacts
    # without one (the scheduling user's), and when the next wave of zones is due (set while
    # waves wait; beat freezes a due wave through campaign_freeze). scheduled_at is the first.
    local_send_time = models.CharField(max_length=16, blank=True, editable=False)
    local_fallback_zone = models.CharField(max_length=64, blank=True, editable=False)
    next_wave_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "scheduled_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["stream_key"],
                condition=models.Q(kind="transactional"),
                name="uniq_transactional_stream",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind="campaign") | models.Q(contact_list__isnull=False),
                name="campaign_has_list",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TransactionalStream(Campaign):
    """The admin's page of the API's transactional streams (Campaign rows of that kind): a
    proxy, so that their page and its permissions are their own."""

    class Meta:
        proxy = True
        verbose_name = "transactional stream"


class BulkJob(Campaign):
    """The admin's page of the API's bulk jobs (Campaign rows of kind `job`): a proxy, so
    that their page and its permissions are their own."""

    class Meta:
        proxy = True
        verbose_name = "bulk job"


class CampaignCounter(models.Model):
    """Report counts kept incrementally (one row per campaign and name, added to with an
    upsert), so a report never scans a million-row ledger or event table."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="counters")
    name = models.CharField(max_length=40)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "name"], name="uniq_campaign_counter")
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value} (campaign {self.campaign_id})"


class CampaignLink(models.Model):
    """A tracked link of a campaign's HTML: click URLs carry its index, never the destination."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="links")
    index = models.PositiveIntegerField()
    url = models.URLField(max_length=2048)

    class Meta:
        ordering = ["campaign", "index"]
        verbose_name = "link"
        constraints = [
            models.UniqueConstraint(fields=["campaign", "index"], name="uniq_campaign_link")
        ]

    def __str__(self) -> str:
        return f"link {self.index} of campaign {self.campaign_id}"


class Notification(models.Model):
    """The ledger: one row per recipient per send. Kept narrow; it grows by millions of rows.

    Every row changes status twice on its way out (created → sending → sent). No index
    covers `status` (nor `updated_at` or `reason`), and the table keeps half of each page free
    (fillfactor 50, migration 0006), so the claim is a HOT update: PostgreSQL writes the new
    row version into the same page and touches no index. (The record sets `message_id`, which
    is indexed for SES events, so it adds index entries.) Any index on `status`, or full
    pages, would add an entry to every index on each change
    (docs/decisions/0002-ledger-without-status-index.md). Readers that look for a
    campaign's pending rows read its rows through (campaign, contact), so they run only where
    the report counters say rows are pending (campaigns.selectors).
    """

    class Status(models.TextChoices):
        # Values are what the database and the API keep; labels are what a marketer reads.
        CREATED = "created", "Waiting"  # frozen into the audience, not yet claimed
        SENDING = "sending", "Handing to SES"  # claimed by a batch; the hand-off is under way
        SENT = "sent", "Sent"  # SES accepted it (message_id set)
        DELIVERED = "delivered", "Delivered"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Marked as spam"
        REJECTED = "rejected", "Refused by SES"
        FAILED = "failed", "Failed"  # a definite failure before SES accepted it
        # The hand-off's outcome is unknown: never re-sent automatically.
        UNKNOWN = "unknown", "Outcome unknown"
        SKIPPED = "skipped", "Skipped (unsubscribed or suppressed)"  # or campaign cancelled

    id = models.BigAutoField(primary_key=True)
    # No index of its own: (campaign, contact) starts with it. Every update that is not HOT
    # adds an entry to each of the ledger's indexes, so each one costs.
    campaign = models.ForeignKey(
        Campaign, on_delete=models.PROTECT, related_name="notifications", db_index=False
    )
    contact = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="notifications")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CREATED)
    # 0 for a campaign's or a job's rows: one per contact, which the unique constraint holds.
    # A transactional message gets a random positive number instead, so one contact can get
    # many messages of the same stream (campaigns.transactional).
    # The database's default too: the freeze (and a job's rows) INSERT … SELECT without it.
    repeat_key = models.BigIntegerField(default=0, db_default=0, editable=False)
    message_id = models.CharField("SES message id", max_length=100, null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # At most once per recipient per campaign, enforced by the database (repeat_key
            # is 0 for every campaign row).
            models.UniqueConstraint(
                fields=["campaign", "contact", "repeat_key"], name="uniq_notification"
            )
        ]
        # What a marketer calls it: one message per recipient of a campaign.
        verbose_name = "message"
        verbose_name_plural = "messages"
        indexes = [
            # Only rows SES accepted have a MessageId: the freeze and the claim write none.
            models.Index(
                fields=["message_id"],
                name="notification_message_id",
                condition=models.Q(message_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"Message #{self.pk}"


class BatchLease(models.Model):
    """A running batch's hold on an id range of a campaign's ledger, kept alive by its heartbeat.

    A batch writes its lease before it claims a row and deletes it once every row it claimed
    has its answer; while it runs it beats at least every few seconds (campaigns.delivery).
    A `sending` row that no live lease covers belongs to a batch that died mid-hand-off: the
    sweeper makes it `unknown` within seconds (a fixed lease on the rows would have to outlast
    the slowest batch).
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="leases")
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    heartbeat_at = models.DateTimeField()
    # Which process holds it (host:pid), for an operator reading the table.
    holder = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"lease {self.first_id}-{self.last_id} of campaign {self.campaign_id}"


class UserPreferences(models.Model):
    """What the admin remembers for each of its users (read and written through
    campaigns.preferences): the time zone their schedule times are typed and shown in, and the
    addresses their test sends go to."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mailwright_preferences"
    )
    # An IANA name (Europe/Paris); empty: the site's time zone (settings.TIME_ZONE).
    time_zone = models.CharField(max_length=64, blank=True)
    # Normalized addresses (the one address rule), in the order the user gave them.
    proof_addresses = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name_plural = "user preferences"

    def __str__(self) -> str:
        return f"preferences of user {self.user_id}"


class CustomField(models.Model):
    """A custom field declared once: its name as templates use it, its label in the admin and
    the type its values are checked against (campaigns.audiences.custom_field_value).
    Values live in Contact.attributes under `name`."""

    class Type(models.TextChoices):
        TEXT = "text", "Text"
        NUMBER = "number", "Number"
        DATE = "date", "Date"
        YES_NO = "yes_no", "Yes / no"

    name = models.CharField(
        max_length=60,
        unique=True,
        help_text="As written in templates, e.g. city for {{ city }}: lower-case letters, "
        "digits and underscores, starting with a letter.",
    )
    label = models.CharField(max_length=100, help_text="As shown on a contact's page.")
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.TEXT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.label or self.name


class ContactStatusChange(models.Model):
    """Who resubscribed a contact (to all mail, or to one list), when and why: the consent
    record a resubscribe cannot happen without (campaigns.audiences). Also who unsubscribed
    or suppressed one on someone else's word (a user, or an integration's API key)."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="status_changes")
    # Set for a resubscribe to one list; empty for all mail (Contact.status).
    contact_list = models.ForeignKey(
        ContactList, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    list_name = models.CharField(max_length=200, blank=True)  # kept if the list is deleted
    from_status = models.CharField(max_length=16)
    to_status = models.CharField(max_length=16)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    # The API key that made it (an integration's unsubscribe or suppress), where no user did.
    api_key = models.ForeignKey(
        "ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.TextField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"status change #{self.pk} of contact {self.contact_id}"


class ImportJob(models.Model):
    """One contacts file on its way in (campaigns.imports): the file's bytes live here, not on
    a web server's disk, so a worker on any machine reads them."""

    class Status(models.TextChoices):
        MAPPING = "mapping", "Waiting for the columns to be matched"
        CHECKING = "checking", "Checking the file"
        CHECKED = "checked", "Checked: waiting for your go-ahead"
        IMPORTING = "importing", "Importing"
        DONE = "done", "Imported"
        FAILED = "failed", "Stopped"

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    file_name = models.CharField(max_length=255)
    data = models.BinaryField()
    encoding = models.CharField(max_length=20)
    delimiter = models.CharField(max_length=1)
    # One entry per column: {"to": "email" | a contact field | "custom" | "skip", "name": …}.
    mapping = models.JSONField(default=list)
    contact_list = models.ForeignKey(ContactList, null=True, on_delete=models.SET_NULL)
    update_existing = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.MAPPING)
    status_reason = models.CharField(max_length=500, blank=True)
    # A worker holds the job until this time and renews it as it goes; past it, nobody does.
    leased_until = models.DateTimeField(null=True, blank=True)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)  # the import's checkpoint
    new_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Import #{self.pk}"


class ImportRowError(models.Model):
    """A row the import refuses, with its line and reason and its cells as read (the error
    file), so nothing refused is lost."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="row_errors")
    line = models.PositiveIntegerField()
    reason = models.CharField(max_length=1000)
    cells = models.JSONField(default=list)
    is_duplicate = models.BooleanField(default=False)

    class Meta:
        ordering = ["line"]
        indexes = [models.Index(fields=["job", "line"])]

    def __str__(self) -> str:
        return f"line {self.line} of import #{self.job_id}"


class LinkCheck(models.Model):
    """What one link of a campaign answered when the pre-send review checked it (written by
    campaigns.linkcheck in the background; the review page polls it). A check informs, it never
    holds the send back."""

    class State(models.TextChoices):
        CHECKING = "checking"
        OK = "ok"
        BROKEN = "broken"  # answered 4xx/5xx
        UNREACHABLE = "unreachable"  # no answer in time, or no connection

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="link_checks")
    url = models.TextField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.CHECKING)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    checked_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"link check {self.pk} of campaign {self.campaign_id}"


class ApiKey(models.Model):
    """A key an integration calls the API with (campaigns.apikeys): shown once when made, kept
    only as a SHA-256 digest of its secret. `prefix` is the visible part that tells keys
    apart (mw_live_3f9a1c2b), and how a request's key is found."""

    name = models.CharField(max_length=100, help_text="What uses it, e.g. the shop's receipts.")
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    # The scopes it grants (campaigns.apikeys.SCOPES).
    scopes = models.JSONField(default=list)
    # A test key's messages go through every step but never reach SES.
    test = models.BooleanField(default=False, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Written at most once a minute per key (campaigns.apikeys), not on every request.
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class MessageRequest(models.Model):
    """What an integration asked for one ledger row (a transactional message, or a job's row):
    its personalisation, its reference and when to send it. The ledger row stays narrow; this
    is read by the claim (personalisation over the contact's fields) and by the API."""

    notification = models.OneToOneField(
        Notification, on_delete=models.CASCADE, primary_key=True, related_name="request"
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # The client's own id for it (an order number), to find it again: GET ?reference=.
    reference = models.CharField(max_length=200, blank=True)
    personalisation = models.JSONField(default=dict, blank=True)
    # Not before this time (a scheduled transactional message); empty: at once.
    send_at = models.DateTimeField(null=True, blank=True)
    # When the message sweeper last enqueued its delivery (its time came, or its task was
    # lost); empty: only at its POST, if it was due then (campaigns.message_sweeper). What
    # keeps the sweeper from enqueueing a waiting message again every 10 s.
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When it was accepted (its ledger row's created_at, written by the same statement): what
    # GET /api/v1/messages?since= reads, here rather than on the ledger, whose recent rows may
    # be a campaign's million. The database's default, so every writer (the POST's single
    # statement, a job's INSERT … SELECT) sets it without naming it.
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        indexes = [
            # Rows come in time order: a BRIN index finds the recent ones in a few pages, at
            # next to nothing per insert on the POST's path.
            BrinIndexPortable(fields=["created_at"], name="message_created_brin"),
            models.Index(
                fields=["reference"], condition=~models.Q(reference=""), name="message_reference"
            ),
            models.Index(
                fields=["send_at"],
                condition=models.Q(send_at__isnull=False),
                name="message_send_at",
            ),
        ]

    def __str__(self) -> str:
        return f"request of message {self.notification_id}"


class IdempotencyRecord(models.Model):
    """The first answer to a request made with an Idempotency-Key (Stripe's semantics): the
    same key and body within IDEMPOTENCY_TTL return it again, another body is refused. The
    unique constraint, written in the request's own transaction, is what makes two concurrent
    requests with one key create one message."""

    # No index of its own: the unique (api_key, key) starts with it, which serves the lookups
    # and the cascade of a deleted key; one index fewer to write on every keyed POST.
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=255)
    # SHA-256 of the method, path and body: "the same request".
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="uniq_idempotency_key")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"idempotency record {self.pk}"


class SweepMark(models.Model):
    """Where a sweep that reads a table by a key's range starts: what lies below its marks is
    known to be answered, so each sweep reads the recent rows and those still waiting, never
    the history (campaigns.message_sweeper). One row per sweep, by name."""

    name = models.CharField(max_length=40, primary_key=True)
    # The lowest message id that may still be waiting (a low-water mark on the ledger's key)…
    low_id = models.BigIntegerField(default=0)
    # …and the first scheduled message that may still be waiting, by (send_at, id): many
    # messages may share one send_at.
    low_send_at = models.DateTimeField(null=True, blank=True)
    low_send_at_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"sweep mark {self.name}"


# -- bulk jobs (campaigns.jobs) ---------------------------------------------------------------


class JobRequest(models.Model):
    """What POST /api/v1/jobs asked for, beside its campaign of kind `job`: how many rows it
    accepted, the rows it refused (skip_invalid_rows) and how far creating its ledger rows
    has come. Written with the job's staged rows before the 202."""

    campaign = models.OneToOneField(
        Campaign, on_delete=models.CASCADE, primary_key=True, related_name="job_request"
    )
    # Rows accepted (staged as JobRow, each to become one ledger row).
    total_rows = models.PositiveIntegerField()
    # Rows refused and skipped (skip_invalid_rows): their count, and the first errors
    # ({"code", "field", "message", "row"}, campaigns.jobs.ROW_ERRORS_SHOWN at most).
    invalid_count = models.PositiveIntegerField(default=0)
    invalid_rows = models.JSONField(default=list, blank=True)
    # Staged rows up to this row number have their ledger rows (the checkpoint a resumed
    # creation starts after; written with each chunk).
    rows_done_through = models.PositiveIntegerField(default=0)
    # The creator's lease (campaigns.jobs.job_creation_lease_take): the freeze creating the
    # ledger rows renews it before each chunk; one whose lease has run out has died, and the
    # sweeper resumes the creation at once rather than after its 5-minute stall threshold.
    creator = models.CharField(max_length=32, blank=True, editable=False)
    creator_until = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        return f"request of job {self.campaign_id}"


class JobRow(models.Model):
    """One row of a bulk job as the request gave it (address normalized), staged durably before
    the 202 so that creating its contact, ledger row and MessageRequest can be resumed after
    any crash; deleted once the job's ledger is complete (campaigns.jobs)."""

    pk = models.CompositePrimaryKey("job", "row")
    # (No index of its own: the primary key starts with it.)
    job = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+", db_index=False)
    row = models.PositiveIntegerField()  # its number in the request (1 = the first row)
    email = models.CharField(max_length=254)
    reference = models.CharField(max_length=200, blank=True)
    personalisation = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            # A job sends one message per address (the rows are checked for it first); the
            # freeze finds each new ledger row's staged row by its contact's address.
            models.UniqueConstraint(fields=["job", "email"], name="uniq_job_row_email")
        ]

    def __str__(self) -> str:
        return f"row {self.row} of job {self.job_id}"


class MessageOutcome(models.Model):
    """Outbox of the ledger's outcomes for callbacks (docs/DATAFLOW.md#callbacks-to-integrators):
    one row per message the ledger moved to `sent` (SES accepted it), `failed` or `unknown`,
    written by campaigns.ledger.ledger_transition in the same statement as the move, and only
    while some enabled callback endpoint wants that outcome (OutcomeSubscription). tracking's
    fan-out reads it past a high-water mark on `id`; it prunes rows past the callbacks' retry
    window. No foreign key and no index but the primary key: the insert stays one cheap
    statement per SES call, and deleting a campaign never waits on this table."""

    id = models.BigAutoField(primary_key=True)
    notification_id = models.BigIntegerField()
    status = models.CharField(max_length=10)  # the ledger status reached: sent / failed / unknown
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"message {self.notification_id} {self.status}"


class OutcomeSubscription(models.Model):
    """One row: which ledger outcomes (`sent`, `failed`, `unknown`) some enabled callback
    endpoint wants, kept by tracking.callbacks (on every endpoint change and every fan-out
    pass). The ledger reads it (cached for seconds per process) to skip the outbox insert
    when nobody listens: campaigns may not read tracking's endpoints itself."""

    statuses = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return "callback outcomes wanted"
