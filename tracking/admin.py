"""Raw event tables, superusers only: SES payloads carry addresses, and the reports and
journeys show what the events mean to anybody allowed to see campaigns."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from config.admin_access import SuperuserOnlyAdmin
from tracking.models import Event, PendingEspEvent
from tracking.ses_events.parse import ses_event_type
from tracking.ses_events.pending import GAVE_UP, pending_expires_at
from tracking.ses_events.retry import esp_events_retry_pending


@admin.register(Event)
class EventAdmin(SuperuserOnlyAdmin, admin.ModelAdmin):
    """Read-only: events are the record the reports were counted from (no add, change or
    delete, superusers included)."""

    list_display = ("type", "occurred_at", "campaign", "message", "link_url", "source")
    list_display_links = ("type",)
    list_select_related = ("notification__campaign", "link")
    list_filter = ("type", "source")
    search_fields = ("=notification__id", "=esp_event_id")
    raw_id_fields = ("notification", "link")
    show_full_result_count = False
    readonly_fields = [f.name for f in Event._meta.fields]

    @admin.display(description="Campaign")
    def campaign(self, obj) -> str:
        campaign = obj.notification.campaign
        url = reverse("admin:campaigns_campaign_change", args=[campaign.pk])
        return format_html('<a href="{}">{}</a>', url, campaign)

    @admin.display(description="Message")
    def message(self, obj) -> str:
        url = reverse("admin:campaigns_notification_change", args=[obj.notification_id])
        return format_html('<a href="{}">Message #{}</a>', url, obj.notification_id)

    @admin.display(description="Link")
    def link_url(self, obj) -> str:
        return obj.link.url if obj.link_id else "—"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PendingEspEvent)
class PendingEspEventAdmin(SuperuserOnlyAdmin, admin.ModelAdmin):
    """SES events waiting for their message id to be recorded (retried by beat). Rows whose
    retries stopped after the retention (ESP_EVENT_PENDING_RETENTION_HOURS) stay here, marked
    "retries stopped", until they expire (ESP_EVENT_PENDING_EXPIRY_HOURS, shown per row): then
    beat deletes them and logs how many."""

    list_display = (
        "id", "message_id", "event_type", "source", "attempts", "state", "created_at", "expires",
    )  # fmt: skip
    list_filter = ("source",)
    search_fields = ("=message_id", "=esp_event_id")
    show_full_result_count = False
    readonly_fields = [f.name for f in PendingEspEvent._meta.fields]
    actions = ["retry_now"]

    @admin.display(description="SES event")
    def event_type(self, obj) -> str:
        return ses_event_type(obj.payload) if isinstance(obj.payload, dict) else "?"

    @admin.display(description="Next attempt", ordering="next_attempt_at")
    def state(self, obj) -> str:
        if obj.next_attempt_at >= GAVE_UP:
            return "retries stopped"
        return obj.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S %Z")

    @admin.display(description="Expires")
    def expires(self, obj) -> str:
        return pending_expires_at(pending=obj).strftime("%Y-%m-%d %H:%M:%S %Z")

    @admin.action(description="Retry the selected events now", permissions=["retry"])
    def retry_now(self, request, queryset) -> None:
        summary = esp_events_retry_pending(ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(
            request,
            f"Recorded {summary.recorded}, already recorded {summary.duplicate}, "
            f"still unknown {summary.pending}.",
        )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Beat deletes them when they expire (and logs how many); by hand, none is lost.
        return False

    def has_retry_permission(self, request) -> bool:
        # Rows are read-only (no change permission); retrying records events: superusers.
        return request.user.is_superuser


from tracking import admin_callbacks  # noqa: E402, F401 (registers the callback endpoints' admin)
