"""The ledger in the admin: read-only, searched by exact keys only."""

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.utils.functional import cached_property

from campaigns import services
from campaigns.models import MessageRequest, Notification
from tracking.reports.journeys import notification_journey


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows: the ledger has millions, and an exact COUNT(*) of a filter
    ("all sent of a 1M campaign") reads every matching row on every page view. Past the cap
    the list says "10,000+"; a search or a filter narrows it."""

    CAP = 10_000
    capped = False

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by()[: self.CAP + 1].count()
        self.capped = counted > self.CAP
        return min(counted, self.CAP)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    change_form_template = "admin/campaigns/notification/change_form.html"
    list_display = ("id", "campaign", "contact_email", "status", "message_id", "updated_at")
    list_filter = ("status", "campaign")
    list_select_related = ("campaign", "contact")
    # The one search box finds by an exact key, each an index lookup (see get_search_results):
    # a substring search ("icontains") would scan a million rows.
    search_fields = ("contact__email",)
    search_help_text = "A contact's email address, a message number or an SES message id (exact)."
    raw_id_fields = ("campaign", "contact")
    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice, over the whole ledger
    sortable_by = ("id",)  # sorting a million rows by another column is a full sort
    ordering = ("-id",)
    readonly_fields = [
        *(f.name for f in Notification._meta.fields), "contact_email", "api_reference",
        "api_key",
    ]  # fmt: skip

    @admin.display(description="Contact")
    def contact_email(self, obj) -> str:
        return obj.contact.email

    # A message sent through the API (a transactional message, a job's row): what its request
    # said, to find it again from the integration's side.
    @admin.display(description="API reference")
    def api_reference(self, obj) -> str:
        request = MessageRequest.objects.filter(pk=obj.pk).only("reference").first()
        return (request.reference or "(none)") if request else "-"

    @admin.display(description="API key")
    def api_key(self, obj) -> str:
        request = MessageRequest.objects.filter(pk=obj.pk).select_related("api_key").first()
        if request is None or request.api_key is None:
            return "-"
        return f"{request.api_key.name} ({request.api_key.prefix})"

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if "@" in term:
            try:
                email = services.contact_normalize_email(term)
            except ValidationError:  # not an address anybody could have been sent to
                return queryset.none(), False
            return queryset.filter(contact__email=email), False
        if term.isascii() and term.isdigit() and len(term) < 19:  # a bigint id
            return queryset.filter(Q(id=int(term)) | Q(message_id=term)), False
        return queryset.filter(message_id=term), False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        notification = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if notification is not None and self.has_view_or_change_permission(request, notification):
            extra_context["journey"] = notification_journey(notification_id=notification.pk)
        return super().change_view(request, object_id, form_url, extra_context)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # The ledger is the record of what was sent: deleting a row would also lose its
        # events and leave the campaign's counters counting it.
        return False
