"""The marketer's side: contacts (with CSV import), lists, campaigns and their controls."""

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
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
from tracking.selectors import campaign_report


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
        ]  # fmt: skip
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        campaign = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if campaign is not None:
            extra_context["report"] = campaign_report(campaign_id=campaign.pk)
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


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign", "contact_id", "status", "message_id", "updated_at")
    list_filter = ("status",)
    search_fields = ("=message_id", "=id")
    list_select_related = ("campaign",)
    raw_id_fields = ("campaign", "contact")
    show_full_result_count = False
    readonly_fields = [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
