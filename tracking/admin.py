from django.contrib import admin

from tracking.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "source", "occurred_at", "notification_id", "link_id")
    list_filter = ("type", "source")
    search_fields = ("=notification__id", "=esp_event_id")
    raw_id_fields = ("notification", "link")
    show_full_result_count = False
    readonly_fields = [f.name for f in Event._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
