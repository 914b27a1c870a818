"""Campaigns in the admin: the form, the controls (send now, schedule, pause, resume, cancel),
the report with its CSV exports, and the progress the page polls."""

import functools
import zoneinfo

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
from django.utils import timezone

from campaigns import services
from campaigns.admin.contacts import can_view_contacts
from campaigns.admin.exports import csv_download, recipient_csv_rows, report_csv_rows
from campaigns.admin.local_time import campaign_wave_rows
from campaigns.admin.proofs import ProofAdminMixin
from campaigns.admin.review import CampaignReviewViews, review_url, wall_time
from campaigns.forms import CampaignForm
from campaigns.models import Campaign, CampaignLink
from campaigns.preferences import user_preferences_update, user_time_zone
from campaigns.selectors import campaign_status_label
from tracking.reports.report import campaign_report, campaign_summaries


class CampaignLinkInline(admin.TabularInline):
    model = CampaignLink
    fields = ("index", "url")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


# Buttons on the campaign page: action → (label, service, statuses it shows in). Send now and
# Schedule are not among them: they open the pre-send review (campaigns/admin/review.py).
CAMPAIGN_ACTIONS = {
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
class CampaignAdmin(ProofAdminMixin, CampaignReviewViews, admin.ModelAdmin):
    form = CampaignForm
    change_form_template = "admin/campaigns/campaign/change_form.html"
    list_display = (
        "name", "status_label", "contact_list", "template", "scheduled", "recipients",
    )  # fmt: skip
    list_filter = ("status",)
    search_fields = ("name",)
    autocomplete_fields = ("contact_list",)
    inlines = [CampaignLinkInline]
    readonly_fields = (
        "status_label", "status_reason", "started_at", "finished_at", "recipient_count",
        "ses_template_name", "created_at", "updated_at",
    )  # fmt: skip

    def get_queryset(self, request):
        # Campaigns only: the API's transactional streams and bulk jobs have no list, no
        # schedule and no controls here (docs/API.md); their messages are in the ledger's page.
        return super().get_queryset(request).filter(kind=Campaign.Kind.CAMPAIGN)

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

    @admin.display(description="Scheduled at", ordering="scheduled_at")
    def scheduled(self, obj) -> str:
        # In the zone of the user reading the list (changelist_view activates it).
        return (
            wall_time(obj.scheduled_at, timezone.get_current_timezone())
            if obj.scheduled_at
            else "-"
        )

    def changelist_view(self, request, extra_context=None):
        with timezone.override(user_time_zone(user=request.user)):
            return _rendered(super().changelist_view(request, extra_context))

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
        return own + self.review_urls() + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        campaign = self.get_object(request, object_id)
        extra_context = extra_context or {}
        zone = user_time_zone(user=request.user)
        # Without the permission the admin answers 403: nothing to compute for it.
        if campaign is not None and self.has_view_or_change_permission(request, campaign):
            report = campaign_report(campaign_id=campaign.pk, time_zone=zone)
            extra_context["report"] = report
            extra_context["report_timeline"] = report.timeline.as_json()
            # The buttons show only to those who may press them (change permission).
            can_change = self.has_change_permission(request, campaign)
            extra_context["campaign_actions"] = [
                (slug, label) for slug, (label, _, shown) in CAMPAIGN_ACTIONS.items()
                if can_change and campaign.status in shown
            ]  # fmt: skip
            extra_context["can_schedule"] = can_change and campaign.status == Campaign.Status.DRAFT
            if extra_context["can_schedule"]:
                form = ScheduleForm(time_zone=zone, auto_id="schedule_%s")
                for field in form.fields.values():  # its <form> follows the admin's own
                    field.widget.attrs["form"] = "campaign-schedule-form"
                extra_context["schedule_form"] = form
            extra_context["review_url"] = review_url(campaign.pk)
            extra_context["can_download_recipients"] = can_view_contacts(request)
            extra_context["local_time_waves"] = campaign_wave_rows(campaign=campaign)
        # Times on the page (the scheduled time, the read-only dates) in the user's zone.
        with timezone.override(zone):
            return _rendered(super().change_view(request, object_id, form_url, extra_context))

    def _back(self, pk: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))

    def _changeable(self, request: HttpRequest, pk: int) -> Campaign:
        """The campaign, if this user may act on it (Django's change permission), else 403."""
        campaign = get_object_or_404(self.get_queryset(request), pk=pk)
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
        """The schedule form: checked, its time zone remembered as the user's, then on to the
        review (which schedules only once confirmed)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._changeable(request, pk)
        user_zone = user_time_zone(user=request.user)
        form = ScheduleForm(request.POST, time_zone=user_zone)
        if not form.is_valid():
            for errors in form.errors.values():
                messages.error(request, " ".join(errors))
            return self._back(pk)
        zone = form.cleaned_data["time_zone"]
        if zone != user_zone.key:
            user_preferences_update(user=request.user, time_zone=zone)
        return HttpResponseRedirect(
            review_url(pk, form.cleaned_data["send_at"], local_time=form.cleaned_data["local_time"])
        )

    def _viewable(self, request: HttpRequest, pk: int) -> Campaign:
        campaign = get_object_or_404(self.get_queryset(request), pk=pk)
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
        campaign = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_view_permission(request, campaign):
            return JsonResponse({"error": "forbidden"}, status=403)
        # Polled every few seconds while the page is open: the plain counters only, not the
        # links and the hourly timeline the report page reads.
        return JsonResponse(campaign_summaries(campaign_ids=[pk])[pk].progress())


def _rendered(response):
    """Render a template response now, inside the caller's time zone override (it would
    otherwise render after the view returns, in the site's zone)."""
    if hasattr(response, "render") and not response.is_rendered:
        response.render()
    return response


@functools.cache
def _time_zone_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(zoneinfo.available_timezones())]


class ScheduleForm(forms.Form):
    """When to send: a date and time typed in the chosen time zone (`time_zone`, the user's own,
    by default), cleaned to an aware time. Subclass or add fields here; clean() leaves other
    fields as they are."""

    send_at = forms.DateTimeField(
        label="Send on",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        error_messages={
            "required": "Enter the date and time to send.",
            "invalid": "Enter the date and time to send, e.g. 2030-01-31 09:00.",
        },
    )
    time_zone = forms.ChoiceField(label="Time zone", choices=_time_zone_choices)
    # campaigns.waves: each contact gets the typed wall time in their own zone.
    local_time = forms.BooleanField(
        required=False,
        label="Send at this local time in each contact's time zone",
        help_text="Contacts with no time zone get it at this time in the zone above; every "
        "time zone must still be before that time.",
    )

    def __init__(self, *args, time_zone: zoneinfo.ZoneInfo, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].initial = time_zone.key

    def clean(self):
        cleaned = super().clean()
        send_at, zone = cleaned.get("send_at"), cleaned.get("time_zone")
        if send_at is not None and zone:
            # The field read the wall time in the current zone; the same wall time, in the
            # chosen zone, is what the user meant.
            wall = timezone.make_naive(send_at) if timezone.is_aware(send_at) else send_at
            cleaned["send_at"] = timezone.make_aware(wall, zoneinfo.ZoneInfo(zone))
        return cleaned
