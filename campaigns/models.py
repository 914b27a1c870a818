"""Audiences (contacts, lists), campaigns and the notification ledger.

Models hold data only: every write with rules goes through campaigns.services, every status
change through its one guarded function.
"""

from django.conf import settings
from django.db import models


class Contact(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        UNSUBSCRIBED = "unsubscribed"
        BOUNCED = "bounced"  # hard bounce: the address does not exist
        COMPLAINED = "complained"  # marked as spam

    # Normalized by contact_normalize_email (trimmed, lower-cased): unique regardless of case.
    email = models.EmailField(max_length=254, unique=True)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    # Custom fields for personalization: flat {name: value} (names as in templates).
    attributes = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Contact #{self.pk}"


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

    def __str__(self) -> str:
        return f"contact {self.contact_id} in list {self.contact_list_id}"


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        SCHEDULED = "scheduled"
        SENDING = "sending"
        PAUSED = "paused"
        SENT = "sent"
        CANCELLED = "cancelled"
        FAILED = "failed"

    name = models.CharField(max_length=200)
    template = models.ForeignKey("templates_app.Template", on_delete=models.PROTECT)
    contact_list = models.ForeignKey(ContactList, on_delete=models.PROTECT)
    from_email = models.CharField(
        max_length=254, blank=True, help_text="Leave empty for the default sender."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status_reason = models.CharField(max_length=500, blank=True)

    class SendPath(models.TextChoices):
        BULK = "bulk", "Bulk (SES stored template, 50 recipients per call)"
        RENDERED = "rendered", "Rendered (each message rendered here, one call each)"

    send_path = models.CharField(max_length=10, choices=SendPath.choices, default=SendPath.BULK)
    # The template's source as it was when the campaign started: both send paths compile this,
    # so editing the template later never changes what a running campaign sends.
    template_snapshot = models.JSONField(null=True, blank=True, editable=False)
    # The SES stored template this campaign sends with, created when it starts (immutable name).
    ses_template_name = models.CharField(max_length=64, blank=True)
    recipient_count = models.PositiveIntegerField(default=0)
    # When the audience was completely frozen into the ledger. It is frozen in chunks, each
    # chunk's batches sent while the next is written; until this is set the campaign cannot
    # be finished (an empty ledger is not a sent campaign).
    frozen_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "scheduled_at"])]

    def __str__(self) -> str:
        return self.name


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
        CREATED = "created"  # frozen into the audience, not yet claimed
        SENDING = "sending"  # claimed by a batch; its hand-off to SES is in progress
        SENT = "sent"  # SES accepted it (message_id set)
        DELIVERED = "delivered"
        BOUNCED = "bounced"
        COMPLAINED = "complained"
        REJECTED = "rejected"  # refused by SES
        FAILED = "failed"  # a definite failure before SES accepted it
        UNKNOWN = "unknown"  # the hand-off's outcome is unknown: never re-sent automatically
        SKIPPED = "skipped"  # suppressed or unsubscribed when its turn came

    id = models.BigAutoField(primary_key=True)
    # No index of its own: (campaign, contact) starts with it. Every update that is not HOT
    # adds an entry to each of the ledger's indexes, so each one costs.
    campaign = models.ForeignKey(
        Campaign, on_delete=models.PROTECT, related_name="notifications", db_index=False
    )
    contact = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="notifications")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CREATED)
    message_id = models.CharField(max_length=100, null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # At most once per recipient per campaign, enforced by the database.
            models.UniqueConstraint(fields=["campaign", "contact"], name="uniq_notification")
        ]
        indexes = [
            # Only rows SES accepted have a MessageId: the freeze and the claim write none.
            models.Index(
                fields=["message_id"],
                name="notification_message_id",
                condition=models.Q(message_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"Notification #{self.pk}"


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
