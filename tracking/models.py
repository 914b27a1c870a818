from django.db import models

from infra.db import BrinIndexPortable


class Event(models.Model):
    """Something that happened to a sent message: from our own pixel/redirect or from SES."""

    class Type(models.TextChoices):
        SENT = "sent"
        DELIVERED = "delivered"
        DEFERRED = "deferred"
        BOUNCED = "bounced"
        COMPLAINED = "complained"
        REJECTED = "rejected"
        FAILED = "failed"
        OPENED = "opened"
        CLICKED = "clicked"
        UNSUBSCRIBED = "unsubscribed"
        RENDERING_FAILED = "render_fail"  # SES could not render a stored template
        SUBSCRIPTION = "subscription"  # SES subscription-management event
        UNKNOWN = "unknown"

    class Source(models.TextChoices):
        TRACKING = "tracking"  # our pixel and redirect views
        SES = "ses"  # SES event publishing through SNS
        SES_FILE = "ses_file"  # SES events imported from files (Firehose to S3, JSON lines)
        RECIPIENT = "recipient"  # the recipient's own action on our pages (unsubscribe)
        SIMULATED = "simulated"  # SES's answers to a test key's message (campaigns.simulator)

    class Verdict(models.TextChoices):
        """For opens and clicks: was it a person, or software fetching on their behalf?"""

        HUMAN = "human"
        MACHINE = "machine"

    class BounceType(models.TextChoices):
        HARD = "hard"  # SES Permanent: the address does not work
        SOFT = "soft"  # SES Transient / Undetermined: it may work later

    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=12, choices=Type.choices)
    source = models.CharField(max_length=10, choices=Source.choices)
    occurred_at = models.DateTimeField()
    notification = models.ForeignKey(
        "campaigns.Notification", on_delete=models.CASCADE, related_name="events"
    )
    link = models.ForeignKey(
        "campaigns.CampaignLink", null=True, blank=True, on_delete=models.SET_NULL
    )
    user_agent = models.CharField(max_length=500, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    # SNS MessageId (+ recipient) for SES events: a redelivered notification is recorded once.
    esp_event_id = models.CharField(max_length=200, null=True, blank=True, unique=True)
    description = models.CharField(max_length=300, blank=True)
    # Opens and clicks: the verdict and the rule that gave it (e.g. "apple-mpp", "scanner-ua").
    verdict = models.CharField(max_length=8, choices=Verdict.choices, blank=True)
    verdict_reason = models.CharField(max_length=40, blank=True)
    bounce_type = models.CharField(max_length=4, choices=BounceType.choices, blank=True)
    payload = models.JSONField(null=True, blank=True)  # the raw SES event, where it came from SES
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["notification", "type"]),
            # GET /api/v1/events?since=: events arrive nearly in time order, so a BRIN index
            # (next to nothing per insert, on the hot intake path) finds the recent ones.
            BrinIndexPortable(fields=["occurred_at"], name="event_occurred_brin"),
        ]
        verbose_name = "message event"
        verbose_name_plural = "message events (opens, clicks, SES events)"

    def __str__(self) -> str:
        return f"{self.type} event #{self.pk}"


# The columns of the raw INSERTs of Event rows (the hot paths: tracking.hits.record and
# tracking.ses_events.record), in the order both give their values.
EVENT_INSERT_COLUMNS = (
    "type, source, occurred_at, notification_id, link_id, user_agent, ip, esp_event_id, "
    "description, verdict, verdict_reason, bounce_type, payload, created_at"
)
# One row's placeholders for them, for a VALUES list.
EVENT_INSERT_ROW = "(" + ", ".join(["%s"] * len(EVENT_INSERT_COLUMNS.split(","))) + ")"


class PendingEspEvent(models.Model):
    """An SES event that names a message we have not recorded yet (the event outran the send's
    own bookkeeping, or came from a file first): kept and retried, never dropped."""

    esp_event_id = models.CharField(max_length=200, unique=True)
    message_id = models.CharField(max_length=100, db_index=True)
    source = models.CharField(max_length=10, choices=Event.Source.choices)
    payload = models.JSONField()  # the raw SES event
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "SES event waiting for its message"
        verbose_name_plural = "SES events waiting for their message"

    def __str__(self) -> str:
        return f"pending SES event #{self.pk}"


class FirstEngagement(models.Model):
    """The first open / click (all, and human only) of a notification: inserting with ON
    CONFLICT DO NOTHING tells whether an event is the first of its kind, which is what the
    unique counters count."""

    class Kind(models.TextChoices):
        OPEN = "open"
        CLICK = "click"
        HUMAN_OPEN = "human_open"
        HUMAN_CLICK = "human_click"

    notification = models.ForeignKey("campaigns.Notification", on_delete=models.CASCADE)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    occurred_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["notification", "kind"], name="uniq_first_engagement")
        ]

    def __str__(self) -> str:
        return f"first {self.kind} of notification {self.notification_id}"


class CallbackEndpoint(models.Model):
    """An integrator's URL that hears about what happens to messages, jobs and campaigns
    (tracking.callbacks): signed POSTs, one per event, at least once."""

    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # The event types it wants (tracking.callbacks.EVENT_TYPES), e.g. ["message.bounced"].
    event_types = models.JSONField(default=list)
    # The signing secret: kept as it is, since signing needs it (a hash would not sign). Shown
    # once, when made or rotated; never again by the admin or the API.
    secret = models.CharField(max_length=100, editable=False)
    # The secret before the last rotation, still signing (a second v1=) until this time, so a
    # receiver can switch over without refusing a delivery.
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=500, blank=True, editable=False)
    # When its deliveries began failing without a success since (None: the last one worked).
    # Failing for CALLBACK_DISABLE_AFTER disables it.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        "auth.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    # The API key that made it, if one did (campaigns.ApiKey: kept as a plain id, tracking
    # sits below campaigns).
    created_by_key_id = models.BigIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "callback endpoint"
        verbose_name_plural = "callback endpoints (webhooks to integrators)"

    def __str__(self) -> str:
        return f"callback endpoint #{self.pk}"


class CallbackDelivery(models.Model):
    """One event for one endpoint: the outbox row its delivery task claims, posts and answers.
    Unique per (endpoint, event id): finding an event twice queues it once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"  # to be posted (again) at next_attempt_at
        DELIVERED = "delivered", "Delivered"  # the receiver answered 2xx
        FAILED = "failed", "Gave up"  # still refused after CALLBACK_MAX_AGE (72 h)

    id = models.BigAutoField(primary_key=True)
    endpoint = models.ForeignKey(
        CallbackEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    # The id the receiver dedupes on (Mailwright-Event-Id), e.g. "evt_12345" or "cmp_7_finished".
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=32)
    # What the payload is built from at delivery: a tracking Event, a ledger outcome
    # (campaigns.MessageOutcome: message.sent/failed/unknown), or a campaign / job.
    tracking_event = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    outcome_id = models.BigIntegerField(null=True, blank=True)
    campaign_id = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # A claim pushes this past the lease: a worker killed mid-post leaves the row due again.
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)  # HTTP status
    last_error = models.CharField(max_length=300, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="uniq_callback_delivery")
        ]
        indexes = [
            # What the delivery tasks claim: the due rows of each endpoint.
            models.Index(
                fields=["endpoint", "next_attempt_at"],
                name="callback_delivery_due",
                condition=models.Q(status="pending"),
            )
        ]
        verbose_name = "callback delivery"
        verbose_name_plural = "callback deliveries"

    def __str__(self) -> str:
        return f"callback delivery #{self.pk}"


class CallbackMark(models.Model):
    """How far the fan-out has read (tracking.callbacks.callbacks_fan_out): one row. Kept in
    PostgreSQL, as durable as the events it points into."""

    event_id = models.BigIntegerField(default=0)  # tracking Events up to this id are queued
    # The ledger's outcomes (campaigns.MessageOutcome) up to this id are queued.
    outcome_id = models.BigIntegerField(default=0)
    # Campaigns and jobs finished up to this time are queued (minus a grace, re-read).
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return "callbacks mark"
