"""The marketer's side: contacts (with CSV import), lists, campaigns and their controls,
campaign reports (with CSV exports) and each notification's journey."""

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Min, Q
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.functional import cached_property
from import_export.admin import ImportExportModelAdmin
from import_export.forms import ConfirmImportForm, ImportForm

from campaigns import services
from campaigns.models import Campaign, CampaignLink, Contact, ContactList, Notification
from campaigns.resources import (
    ContactCSV,
    ContactFileError,
    ContactResource,
    unreadable_text_message,
)
from tracking.models import FirstEngagement
from tracking.selectors import (
    CampaignReport,
    Rate,
    campaign_report,
    contact_journeys,
    notification_journey,
)

# -- CSV exports ------------------------------------------------------------------------------

# A cell a spreadsheet would read as a formula (CSV injection): = + - @ start one, and tab or
# carriage return can hide one; such cells get a leading apostrophe, which spreadsheets show
# as text. Numbers are written as numbers (they cannot carry a formula).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, Rate):
        return "" if value.percent is None else value.percent
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _Echo:
    """A file that hands back what is written to it: csv.writer feeding a streamed response."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[Iterable]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow([csv_cell(cell) for cell in row])


def csv_download(rows: Iterable[Iterable], *, filename: str, stream: bool = False):
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if stream:
        return StreamingHttpResponse(csv_lines(rows), content_type="text/csv", headers=headers)
    return HttpResponse("".join(csv_lines(rows)), content_type="text/csv", headers=headers)


def report_csv_rows(report: CampaignReport, *, campaign_name: str) -> Iterator[tuple]:
    yield ("Campaign", report.campaign_id, campaign_name)
    yield ("Rates are percentages; rates out of", report.rate_basis)
    yield ()
    yield ("Metric", "All", "Human")
    yield from report.rows()
    yield ()
    yield ("Link", "URL", "Clicks", "Unique clicks", "Human clicks")
    for link in report.links:
        yield (link.index, link.url, link.clicks, link.unique_clicks, link.human_clicks)
    yield ()
    yield (f"Time (UTC, per {report.timeline.unit})", "Opens", "Clicks", "Human opens",
           "Human clicks")  # fmt: skip
    yield from report.timeline.rows()


RECIPIENT_CSV_HEADER = (
    "Notification", "Email", "Status", "Reason", "SES MessageId", "Queued at", "Last change at",
    "First open at", "First human open at", "First click at", "First human click at",
)  # fmt: skip


def recipient_csv_rows(*, campaign_id: int) -> Iterator[tuple]:
    """The campaign's ledger, one row per recipient, read in chunks through a server-side
    cursor: a million rows stream out without being held in memory."""
    K = FirstEngagement.Kind

    def first(kind: str) -> Min:
        return Min("firstengagement__occurred_at", filter=Q(firstengagement__kind=kind))

    yield RECIPIENT_CSV_HEADER
    yield from (
        Notification.objects.filter(campaign_id=campaign_id)
        .values_list("id", "contact__email", "status", "reason", "message_id", "created_at",
                     "updated_at")
        .annotate(**{f"first_{kind}": first(kind) for kind in
                     (K.OPEN, K.HUMAN_OPEN, K.CLICK, K.HUMAN_CLICK)})
        .order_by("id")
        .iterator(chunk_size=2000)
    )  # fmt: skip


class ContactImportForm(ImportForm):
    contact_list = forms.ModelChoiceField(
        queryset=ContactList.objects.all(),
        required=False,
        help_text="Add every imported contact to this list (optional).",
    )


class ContactConfirmImportForm(ConfirmImportForm):
    contact_list = forms.ModelChoiceField(
        queryset=ContactList.objects.all(), required=False, widget=forms.HiddenInput
    )


class ContactForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = ("email", "first_name", "last_name", "attributes", "status")

    def clean_email(self) -> str:
        # Normalized before the unique check, so "Ada@Example.com" meets "ada@example.com".
        return services.contact_normalize_email(self.cleaned_data["email"])


# A contact's page shows their newest notifications' journeys, each a few queries.
CONTACT_JOURNEYS_SHOWN = 20


@admin.register(Contact)
class ContactAdmin(ImportExportModelAdmin):
    form = ContactForm
    resource_classes = [ContactResource]
    import_form_class = ContactImportForm
    confirm_form_class = ContactConfirmImportForm
    import_formats = [ContactCSV]
    list_display = ("email", "first_name", "last_name", "status", "created_at")
    list_filter = ("status", "lists")
    search_fields = ("email", "first_name", "last_name")
    readonly_fields = ("created_at", "updated_at")
    show_full_result_count = False  # COUNT(*) over millions of contacts on every page

    def get_import_resource_kwargs(self, request, **kwargs):
        form = kwargs.get("form")
        # The form is unbound when the import page is first shown: no list chosen yet.
        contact_list = getattr(form, "cleaned_data", {}).get("contact_list")
        return {
            **super().get_import_resource_kwargs(request, **kwargs),
            "contact_list": contact_list,
        }

    def add_data_read_fail_error_to_form(self, form, e):
        if isinstance(e, ContactFileError):
            form.add_error("import_file", str(e))
        elif isinstance(e, UnicodeDecodeError):
            form.add_error("import_file", unreadable_text_message(e))
        else:
            super().add_data_read_fail_error_to_form(form, e)

    def get_confirm_form_initial(self, request, import_form):
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form is not None and import_form.cleaned_data.get("contact_list"):
            initial["contact_list"] = import_form.cleaned_data["contact_list"].pk
        return initial

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # "Where did my email to X go?": their newest notifications, each with its journey.
        contact = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if contact is not None and self.has_view_or_change_permission(request, contact):
            extra_context["journeys"] = contact_journeys(
                contact_id=contact.pk, limit=CONTACT_JOURNEYS_SHOWN
            )
            extra_context["journeys_limit"] = CONTACT_JOURNEYS_SHOWN
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(ContactList)
class ContactListAdmin(admin.ModelAdmin):
    list_display = ("name", "member_count", "created_at")
    search_fields = ("name",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("membership"))

    @admin.display(ordering="member_count", description="Members")
    def member_count(self, obj) -> int:
        return obj.member_count


class CampaignLinkInline(admin.TabularInline):
    model = CampaignLink
    fields = ("index", "url")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


# Buttons on the campaign page: action → (label, service, statuses it shows in).
CAMPAIGN_ACTIONS = {
    "send-now": ("Send now", services.campaign_send_now, {Campaign.Status.DRAFT}),
    "unschedule": ("Unschedule", services.campaign_unschedule, {Campaign.Status.SCHEDULED}),
    "pause": ("Pause", services.campaign_pause, {Campaign.Status.SENDING}),
    "resume": ("Resume", services.campaign_resume, {Campaign.Status.PAUSED}),
    "cancel": (
        "Cancel",
        services.campaign_cancel,
        {Campaign.Status.SCHEDULED, Campaign.Status.SENDING, Campaign.Status.PAUSED},
    ),
}


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    change_form_template = "admin/campaigns/campaign/change_form.html"
    list_display = ("name", "status", "contact_list", "template", "scheduled_at", "recipients")
    list_filter = ("status",)
    search_fields = ("name",)
    autocomplete_fields = ("contact_list",)
    inlines = [CampaignLinkInline]
    readonly_fields = (
        "status", "status_reason", "started_at", "finished_at", "recipient_count",
        "ses_template_name", "created_at", "updated_at",
    )  # fmt: skip

    @admin.display(description="Recipients", ordering="recipient_count")
    def recipients(self, obj) -> int:
        return obj.recipient_count

    def get_inlines(self, request, obj):
        # Links are recorded when the campaign starts; from then on the report's per-link
        # table lists them with their clicks, and a read-only formset of the same 10 rows
        # took a third of the page's time (bench/report.py: median 23 ms without, 37-57 with).
        if obj is not None and obj.status != Campaign.Status.DRAFT:
            return []
        return super().get_inlines(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status != Campaign.Status.DRAFT:
            return ("name", "template", "contact_list", "from_email", "scheduled_at",
                    *self.readonly_fields)  # fmt: skip
        return self.readonly_fields

    def get_urls(self):
        own = [
            path("<int:pk>/progress/", self.admin_site.admin_view(self.progress_view),
                 name="campaigns_campaign_progress"),
            path("<int:pk>/schedule/", self.admin_site.admin_view(self.schedule_view),
                 name="campaigns_campaign_schedule"),
            path("<int:pk>/action/<slug:action>/", self.admin_site.admin_view(self.action_view),
                 name="campaigns_campaign_action"),
            path("<int:pk>/report.csv", self.admin_site.admin_view(self.report_csv_view),
                 name="campaigns_campaign_report_csv"),
            path("<int:pk>/recipients.csv", self.admin_site.admin_view(self.recipients_csv_view),
                 name="campaigns_campaign_recipients_csv"),
        ]  # fmt: skip
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        campaign = self.get_object(request, object_id)
        extra_context = extra_context or {}
        # Without the permission the admin answers 403: nothing to compute for it.
        if campaign is not None and self.has_view_or_change_permission(request, campaign):
            report = campaign_report(campaign_id=campaign.pk)
            extra_context["report"] = report
            extra_context["report_timeline"] = report.timeline.as_json()
            extra_context["campaign_actions"] = [
                (slug, label) for slug, (label, _, shown) in CAMPAIGN_ACTIONS.items()
                if campaign.status in shown
            ]  # fmt: skip
            extra_context["can_schedule"] = campaign.status == Campaign.Status.DRAFT
        return super().change_view(request, object_id, form_url, extra_context)

    def _back(self, pk: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))

    def action_view(self, request: HttpRequest, pk: int, action: str):
        campaign = get_object_or_404(Campaign, pk=pk)
        if request.method != "POST" or not self.has_change_permission(request, campaign):
            return self._back(pk)
        if action not in CAMPAIGN_ACTIONS:
            messages.error(request, f"Unknown action “{action}”.")
            return self._back(pk)
        label, service, _ = CAMPAIGN_ACTIONS[action]
        try:
            service(campaign=campaign)
        except services.CampaignError as err:
            messages.error(request, str(err))
        else:
            messages.success(request, f"{label}: done.")
        return self._back(pk)

    def schedule_view(self, request: HttpRequest, pk: int):
        campaign = get_object_or_404(Campaign, pk=pk)
        if request.method != "POST" or not self.has_change_permission(request, campaign):
            return self._back(pk)
        form = ScheduleForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Enter the date and time to send, e.g. 2030-01-31 09:00.")
            return self._back(pk)
        try:
            services.campaign_schedule(campaign=campaign, send_at=form.cleaned_data["send_at"])
        except services.CampaignError as err:
            messages.error(request, str(err))
        else:
            messages.success(request, "Scheduled.")
        return self._back(pk)

    def _viewable(self, request: HttpRequest, pk: int) -> Campaign:
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_view_permission(request, campaign):
            raise PermissionDenied
        return campaign

    def report_csv_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        campaign = self._viewable(request, pk)
        rows = report_csv_rows(campaign_report(campaign_id=pk), campaign_name=campaign.name)
        return csv_download(rows, filename=f"campaign-{pk}-report.csv")

    def recipients_csv_view(self, request: HttpRequest, pk: int) -> StreamingHttpResponse:
        self._viewable(request, pk)
        return csv_download(
            recipient_csv_rows(campaign_id=pk), filename=f"campaign-{pk}-recipients.csv",
            stream=True,
        )  # fmt: skip

    def progress_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_view_permission(request, campaign):
            return JsonResponse({"error": "forbidden"}, status=403)
        report = campaign_report(campaign_id=pk)
        return JsonResponse(
            {
                "status": campaign.status,
                "recipients": report.recipients,
                "pending": report.pending,
                "sent": report.sent,
                "progress_percent": report.progress_percent,
            }
        )


class ScheduleForm(forms.Form):
    # Interpreted in the site's time zone (DJANGO_TIME_ZONE), shown next to the field.
    send_at = forms.DateTimeField()


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
    search_help_text = "A contact's email address, a notification id or an SES MessageId (exact)."
    raw_id_fields = ("campaign", "contact")
    show_full_result_count = False
    paginator = CappedCountPaginator
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice, over the whole ledger
    sortable_by = ("id",)  # sorting a million rows by another column is a full sort
    ordering = ("-id",)
    readonly_fields = [*(f.name for f in Notification._meta.fields), "contact_email"]

    @admin.display(description="Contact")
    def contact_email(self, obj) -> str:
        return obj.contact.email

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if "@" in term:
            email = services.contact_normalize_email(term)
            return queryset.filter(contact__email=email), False
        if term.isdigit() and len(term) < 19:  # a bigint id (larger ones are not ids)
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
