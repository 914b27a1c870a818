"""The marketer's side: contacts (with CSV import), lists, campaigns and their controls,
campaign reports (with CSV exports) and each notification's journey."""

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Min, Q
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.functional import cached_property
from import_export.admin import ImportExportModelAdmin
from import_export.forms import ConfirmImportForm, ImportForm
from import_export.results import RowResult

from campaigns import services
from campaigns.addresses import sender_header
from campaigns.contact_fields import contact_attributes_check, contact_text_check
from campaigns.csv_cells import csv_cell_escape
from campaigns.models import Campaign, CampaignLink, Contact, ContactList, Notification
from campaigns.resources import (
    ContactCSV,
    ContactFileError,
    ContactResource,
    unreadable_text_message,
)
from tracking.models import FirstEngagement
from tracking.reports.journeys import contact_journeys, notification_journey
from tracking.reports.report import CampaignReport, Rate, campaign_report

# -- CSV exports ------------------------------------------------------------------------------


def csv_cell(value) -> str:
    """A report or ledger value as its CSV cell (campaigns.csv_cells: formula-safe)."""
    if value is None:
        return ""
    if isinstance(value, Rate):
        return "" if value.percent is None else csv_cell_escape(str(value.percent))
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return csv_cell_escape(text)


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
    FE = FirstEngagement.Kind

    def first(kind: str) -> Min:
        return Min("firstengagement__occurred_at", filter=Q(firstengagement__kind=kind))

    yield RECIPIENT_CSV_HEADER
    yield from (
        Notification.objects.filter(campaign_id=campaign_id)
        .values_list("id", "contact__email", "status", "reason", "message_id", "created_at",
                     "updated_at")
        .annotate(**{f"first_{kind}": first(kind) for kind in
                     (FE.OPEN, FE.HUMAN_OPEN, FE.CLICK, FE.HUMAN_CLICK)})
        .order_by("id")
        .iterator(chunk_size=2000)
    )  # fmt: skip


class ContactImportForm(ImportForm):
    contact_list = forms.ModelChoiceField(
        queryset=ContactList.objects.all(),
        required=False,
        help_text="Add every imported contact to this list (optional).",
    )

    def clean_import_file(self):
        upload = self.cleaned_data["import_file"]
        # The import reads the whole file into memory and checks every row twice (preview,
        # then confirm), within one request each: a cap keeps both bounded.
        limit = settings.CONTACT_IMPORT_MAX_MB * 1_000_000
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file has {upload.size / 1_000_000:.1f} MB; an import takes at most "
                f"{settings.CONTACT_IMPORT_MAX_MB} MB (CONTACT_IMPORT_MAX_MB). "
                "Split it into smaller files and import each."
            )
        return upload


class ContactConfirmImportForm(ConfirmImportForm):
    contact_list = forms.ModelChoiceField(
        queryset=ContactList.objects.all(), required=False, widget=forms.HiddenInput
    )


class ContactForm(forms.ModelForm):
    """The rules of campaigns.contact_fields, as the CSV import applies them."""

    class Meta:
        model = Contact
        fields = ("email", "first_name", "last_name", "attributes", "status")

    def clean_email(self) -> str:
        # Normalized before the unique check, so "Ada@Example.com" meets "ada@example.com".
        return services.contact_normalize_email(self.cleaned_data["email"])

    def clean_first_name(self) -> str:
        return contact_text_check(self.cleaned_data["first_name"], label="first name")

    def clean_last_name(self) -> str:
        return contact_text_check(self.cleaned_data["last_name"], label="last name")

    def clean_attributes(self) -> dict:
        return contact_attributes_check(self.cleaned_data["attributes"])


def can_view_contacts(request: HttpRequest) -> bool:
    """Whether this user may read contacts' data (addresses, names, custom fields) anywhere in
    the admin: Django's view permission on Contact (view or change)."""
    return admin.site.get_model_admin(Contact).has_view_permission(request)


# A contact's page shows their newest notifications' journeys, each a few queries.
CONTACT_JOURNEYS_SHOWN = 20


@admin.register(Contact)
class ContactAdmin(ImportExportModelAdmin):
    form = ContactForm
    resource_classes = [ContactResource]
    import_form_class = ContactImportForm
    confirm_form_class = ContactConfirmImportForm
    import_formats = [ContactCSV]
    export_formats = [ContactCSV]  # the formula-safe cell rule; spreadsheets open CSV
    import_template_name = "admin/campaigns/contact/import.html"
    list_display = ("email", "first_name", "last_name", "status", "created_at")
    list_filter = ("status", "lists")
    search_fields = ("email", "first_name", "last_name")
    readonly_fields = ("created_at", "updated_at")
    show_full_result_count = False  # COUNT(*) over millions of contacts on every page

    # Permissions as Django's own views have them (import-export lets any staff user do both).
    def has_import_permission(self, request) -> bool:
        # An import adds contacts and overwrites existing ones.
        return self.has_add_permission(request) and self.has_change_permission(request)

    def has_export_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def create_import_form(self, request):
        return self._without_list_unless_allowed(request, super().create_import_form(request))

    def create_confirm_form(self, request, import_form=None):
        form = super().create_confirm_form(request, import_form)
        return self._without_list_unless_allowed(request, form)

    def _without_list_unless_allowed(self, request, form):
        # Adding the contacts to a list changes the list (what the next campaign sends to).
        if not self.admin_site.get_model_admin(ContactList).has_change_permission(request):
            form.fields.pop("contact_list", None)
        return form

    def get_import_resource_kwargs(self, request, **kwargs):
        form = kwargs.get("form")
        # The form is unbound when the import page is first shown: no list chosen yet.
        contact_list = getattr(form, "cleaned_data", {}).get("contact_list")
        return {
            **super().get_import_resource_kwargs(request, **kwargs),
            "contact_list": contact_list,
        }

    def get_import_data_kwargs(self, **kwargs):
        # One bad row rolls the whole file back at the confirm step too (the preview's check
        # may be stale by then: another import, a forged confirm).
        return {**super().get_import_data_kwargs(**kwargs), "rollback_on_validation_errors": True}

    def import_action(self, request, **kwargs):
        response = super().import_action(request, **kwargs)
        # import-export keeps a copy of every upload for the confirm step; a refused file never
        # gets one, so its copy (contacts' data) is removed now rather than left on disk.
        upload = request.FILES.get("import_file")
        stored = getattr(upload, "tmp_storage_name", None)
        if stored and "confirm_form" not in (getattr(response, "context_data", None) or {}):
            storage_class = self.get_tmp_storage_class()
            storage_class(name=stored, **self.get_tmp_storage_class_kwargs()).remove()
        return response

    def process_dataset(self, dataset, form, request, **kwargs):
        result = super().process_dataset(dataset, form, request, **kwargs)
        result.contact_list = form.cleaned_data.get("contact_list")
        return result

    def process_result(self, result, request):
        if result.has_errors() or result.has_validation_errors():
            messages.error(
                request,
                "Nothing was imported: the file no longer passes its checks. "
                "Upload it again to see each line's problem.",
            )
            return HttpResponseRedirect(reverse("admin:campaigns_contact_import"))
        return super().process_result(result, request)

    def generate_log_entries(self, result, request) -> None:
        """One admin log entry per import, with its counts (one per contact would double the
        writes of a large import)."""
        totals = result.totals
        contact_list = getattr(result, "contact_list", None)
        LogEntry.objects.create(
            user_id=request.user.pk,
            content_type=ContentType.objects.get_for_model(Contact),
            object_repr="Contacts import",
            action_flag=ADDITION,
            change_message=(
                f"Imported a CSV file: {totals[RowResult.IMPORT_TYPE_NEW]} new, "
                f"{totals[RowResult.IMPORT_TYPE_UPDATE]} updated, "
                f"{totals[RowResult.IMPORT_TYPE_SKIP]} unchanged"
                + (f"; added to list #{contact_list.pk}." if contact_list else ".")
            ),
        )

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


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        # No scheduled_at: the Schedule control on the campaign page is the one way to set it
        # (a form field would save a time that nothing acts on: the status stays draft).
        fields = ("name", "template", "contact_list", "from_email", "send_path")

    def clean_from_email(self) -> str:
        value = self.cleaned_data["from_email"]
        if value:
            sender_header(value)  # the sender's own rule; refused with the reason
        return value


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
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
        # table lists them with their clicks, and a read-only formset of the same rows would
        # be a large share of the page's time (bench/report.py; docs/PERFORMANCE.md).
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
            # The buttons show only to those who may press them (change permission).
            can_change = self.has_change_permission(request, campaign)
            extra_context["campaign_actions"] = [
                (slug, label) for slug, (label, _, shown) in CAMPAIGN_ACTIONS.items()
                if can_change and campaign.status in shown
            ]  # fmt: skip
            extra_context["can_schedule"] = can_change and campaign.status == Campaign.Status.DRAFT
            extra_context["can_download_recipients"] = can_view_contacts(request)
        return super().change_view(request, object_id, form_url, extra_context)

    def _back(self, pk: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))

    def _changeable(self, request: HttpRequest, pk: int) -> Campaign:
        """The campaign, if this user may act on it (Django's change permission), else 403."""
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        return campaign

    def action_view(self, request: HttpRequest, pk: int, action: str):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = self._changeable(request, pk)
        if action not in CAMPAIGN_ACTIONS:
            messages.error(request, f"Unknown action “{action}”.")
            return self._back(pk)
        label, service, _ = CAMPAIGN_ACTIONS[action]
        try:
            service(campaign=campaign)
        except services.CampaignError as err:
            messages.error(request, str(err))
        else:
            self.log_change(request, campaign, label)
            messages.success(request, f"{label}: done.")
        return self._back(pk)

    def schedule_view(self, request: HttpRequest, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = self._changeable(request, pk)
        form = ScheduleForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Enter the date and time to send, e.g. 2030-01-31 09:00.")
            return self._back(pk)
        send_at = form.cleaned_data["send_at"]
        try:
            services.campaign_schedule(campaign=campaign, send_at=send_at)
        except services.CampaignError as err:
            messages.error(request, str(err))
        else:
            self.log_change(request, campaign, f"Scheduled for {send_at.isoformat()}")
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
        if not can_view_contacts(request):  # every recipient's address
            raise PermissionDenied
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
