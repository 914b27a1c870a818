"""Contact lists in the admin, each with who on it gets the next campaign and who does not."""

from django.contrib import admin

from campaigns.audiences import ListCounts, list_counts
from campaigns.models import ContactList


@admin.register(ContactList)
class ContactListAdmin(admin.ModelAdmin):
    list_display = ("name", "subscribed", "unsubscribed_list", "unsubscribed_all", "suppressed")
    search_fields = ("name",)

    def get_changelist_instance(self, request):
        # Grouped queries for all the lists on this page, not counts per list: a list can have
        # a million members (docs/PERFORMANCE.md, "List counts").
        changelist = super().get_changelist_instance(request)
        counts = list_counts(list_ids=[obj.pk for obj in changelist.result_list])
        for obj in changelist.result_list:
            obj.counts = counts[obj.pk]
        return changelist

    def change_view(self, request, object_id, form_url="", extra_context=None):
        contact_list = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if contact_list is not None and self.has_view_or_change_permission(request, contact_list):
            extra_context["counts"] = list_counts(list_ids=[contact_list.pk])[contact_list.pk]
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def _counts(obj) -> ListCounts:
        return getattr(obj, "counts", None) or ListCounts()

    @admin.display(description="Subscribed")
    def subscribed(self, obj) -> int:
        return self._counts(obj).subscribed

    @admin.display(description="Unsubscribed from this list")
    def unsubscribed_list(self, obj) -> int:
        return self._counts(obj).unsubscribed_list

    @admin.display(description="Unsubscribed from all mail")
    def unsubscribed_all(self, obj) -> int:
        return self._counts(obj).unsubscribed_all

    @admin.display(description="Bounced or marked as spam")
    def suppressed(self, obj) -> int:
        return self._counts(obj).suppressed
