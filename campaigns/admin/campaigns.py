"""Campaigns in the admin: the form, the controls (send now, schedule, pause, resume, cancel),
the report with its CSV exports, and the progress the page polls."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
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

from campaigns import services
from campaigns.addresses import sender_header
from campaigns.admin.contacts import can_view_contacts
from campaigns.admin.exports import csv_download, recipient_csv_rows, report_csv_rows
from campaigns.admin.local_time import campaign_wave_rows, schedule_local_time
from campaigns.admin.proofs import ProofAdminMixin
from campaigns.models import Campaign, CampaignLink
from campaigns.preferences import user_time_zone
from campaigns.selectors import campaign_status_label
from tracking.reports.report import campaign_report


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
class CampaignAdmin(ProofAdminMixin, admin.ModelAdmin):
    form = CampaignForm
    change_form_template = "admin/campaigns/campaign/change_form.html"
    list_display = (
        "name", "status_label", "contact_list", "template", "scheduled_at", "recipients",
    )  # fmt: skip
    list_filter = ("status",)
    search_fields = ("name",)
    autocomplete_fields = ("contact_list",)
    inlines = [CampaignLinkInline]
    readonly_fields = (
        "status_label", "status_reason", "started_at", "finished_at", "recipient_count",
        "ses_template_name", "created_at", "updated_at",
    )  # fmt: skip

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj) -> str:
        return campaign_status_label(status=obj.status, scheduled_at=obj.scheduled_at)

    # What the engine keeps for itself: shown to superusers only.
    internal_fields = ("ses_template_name",)

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if request.user.is_superuser:
            return fields
        return [name for name in fields if name not in self.internal_fields]

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
            report = campaign_report(
                campaign_id=campaign.pk, time_zone=user_time_zone(user=request.user)
            )
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
            extra_context["local_time_waves"] = campaign_wave_rows(campaign=campaign)
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
            if form.cleaned_data["local_time"]:
                schedule_local_time(request=request, campaign=campaign, send_at=send_at)
            else:
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
        return JsonResponse(campaign_report(campaign_id=pk).progress())


class ScheduleForm(forms.Form):
    # Interpreted in the site's time zone (DJANGO_TIME_ZONE), shown next to the field.
    send_at = forms.DateTimeField()
    local_time = forms.BooleanField(required=False)  # campaigns.admin.local_time
