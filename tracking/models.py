from django.db import models


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
        UNKNOWN = "unknown"

    class Source(models.TextChoices):
        TRACKING = "tracking"  # our pixel and redirect views
        SES = "ses"  # SES event publishing through SNS

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
    payload = models.JSONField(null=True, blank=True)  # the raw SES event, where it came from SES
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["notification", "type"])]

    def __str__(self) -> str:
        return f"{self.type} event #{self.pk}"
