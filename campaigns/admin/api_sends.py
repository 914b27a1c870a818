"""What the API sends, in the admin: transactional streams and bulk jobs, read-only (they are
made by the API, never here), with their counts by status and progress, the key that made a
job, and links to their messages in the ledger's page. A job can be cancelled here, and
resumed when the circuit breaker paused it, after a confirmation, through the services the
API uses (services.campaign_cancel / campaign_resume). The proxy models' permissions decide
who sees (view) and who acts (change)."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns import services
from campaigns.api.jobs import SUMMARY_COUNTERS, job_summary
from campaigns.models import BulkJob, Campaign, CampaignCounter, TransactionalStream


def _with_counters(queryset):
    """Each row with its report counters (one subquery a counter, read with the page: no
    query per row, and never a count of the ledger)."""
    return queryset.annotate(
        **{
            f"counter_{name}": Subquery(
                CampaignCounter.objects.filter(campaign_id=OuterRef("pk"), name=name).values(
                    "value"
                )[:1]
            )
            for name in SUMMARY_COUNTERS
        }
    )


def _counters(obj) -> dict[str, int]:
    return {name: getattr(obj, f"counter_{name}", None) or 0 for name in SUMMARY_COUNTERS}


def _summary(obj) -> dict:
    """The job's summary as GET /api/v1/jobs/{id} answers it (one implementation)."""
    return job_summary(obj, getattr(obj, "job_request", None), _counters(obj))


def _counts_shown(counts: dict) -> str:
    shown = [f"{name} {value:,}" for name, value in counts.items() if value]
    return ", ".join(shown) or "none yet"


def _messages_link(obj) -> str:
    url = reverse("admin:campaigns_notification_changelist")
    return format_html('<a href="{}?campaign__id__exact={}">Messages</a>', url, obj.pk)


class _ApiSendAdmin(admin.ModelAdmin):
    """Read-only: what the API made is changed only by the API's own moves."""

    kind: str = ""
    list_per_page = 50

    def get_queryset(self, request):
        rows = super().get_queryset(request).filter(kind=self.kind).defer("template_snapshot")
        return _with_counters(rows.select_related("template", "api_key"))

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Mode", ordering="test_mode")
    def mode(self, obj) -> str:
        return "test" if obj.test_mode else "live"

    @admin.display(description="Messages")
    def messages(self, obj) -> str:
        return _messages_link(obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            # Nothing to save: the page shows, its buttons (a job's) act.
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(TransactionalStream)
class TransactionalStreamAdmin(_ApiSendAdmin):
    """A stream is one template's content in one mode: every key's messages of it."""

    kind = Campaign.Kind.TRANSACTIONAL
    list_display = ("id", "template", "mode", "counts", "created_at", "messages")
    list_filter = ("test_mode",)
    fields = ("template", "mode", "counts", "created_at", "messages")
    readonly_fields = fields

    @admin.display(description="Counts by status")
    def counts(self, obj) -> str:
        counters = _counters(obj)
        return _counts_shown(
            {
                "sent": counters["sent"],
                "failed": counters["failed"],
                "unknown": counters["unknown"],
                "skipped": counters["skipped"],
                "delivered": counters["delivered"],
                "bounced": counters["bounced_hard"],
                "complained": counters["complained"],
                "rejected": counters["rejected"],
            }
        )


@admin.register(BulkJob)
class BulkJobAdmin(_ApiSendAdmin):
    kind = Campaign.Kind.JOB
    change_form_template = "admin/campaigns/bulkjob/change_form.html"
    list_display = (
        "id", "status", "template", "mode", "key", "progress", "counts", "created_at", "messages",
    )  # fmt: skip
    list_filter = ("status", "test_mode")
    fields = (
        "status", "status_reason", "template", "mode", "key", "rows", "progress", "counts",
        "created_at", "started_at", "finished_at", "messages",
    )  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("job_request")

    @admin.display(description="API key")
    def key(self, obj) -> str:
        return f"{obj.api_key.name} ({obj.api_key.prefix})" if obj.api_key else "-"

    @admin.display(description="Rows")
    def rows(self, obj) -> str:
        summary = _summary(obj)
        return f"{summary['rows']:,} accepted, {summary['invalid_count']:,} refused"

    @admin.display(description="Progress")
    def progress(self, obj) -> str:
        done = _summary(obj)["progress"]
        return (
            f"{done['rows_created']:,} of {done['rows_total']:,} created, "
            f"{done['answered']:,} answered ({done['sent']:,} sent)"
        )

    @admin.display(description="Counts by status")
    def counts(self, obj) -> str:
        return _counts_shown(_summary(obj)["counts"])

    # -- cancel, resume ---------------------------------------------------------------------

    # action → (label, the API's service, statuses it shows in, what the page says first)
    ACTIONS = {
        "cancel": (
            "Cancel",
            services.campaign_cancel,
            {Campaign.Status.SCHEDULED, Campaign.Status.SENDING, Campaign.Status.PAUSED},
            "Messages not yet handed to SES will be skipped, and rows not yet created never "
            "will be. Messages already sent stay sent. This cannot be undone.",
        ),
        "resume": (
            "Resume",
            services.campaign_resume,
            {Campaign.Status.PAUSED},
            "Its waiting messages will be handed to SES again. The circuit breaker paused it "
            "for the reason shown: check the rows that bounced or complained first; it pauses "
            "the job again if the rate stays over its limit.",
        ),
    }

    def get_urls(self):
        # One path per action (a pattern for any word would take the admin's own "change/").
        acts = [
            path(
                f"<int:pk>/{action}/",
                self.admin_site.admin_view(self.action_view),
                {"action": action},
                name=f"campaigns_bulkjob_{action}",
            )
            for action in self.ACTIONS
        ]
        return [*acts, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        actions = []
        if job is not None and self.has_change_permission(request, job):
            actions = [
                (reverse(f"admin:campaigns_bulkjob_{action}", args=[job.pk]), label)
                for action, (label, _, statuses, _) in self.ACTIONS.items()
                if job.status in statuses
            ]
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "job_actions": actions}
        )

    def action_view(self, request: HttpRequest, pk: int, action: str):
        if action not in self.ACTIONS:
            raise PermissionDenied
        job = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, job):
            raise PermissionDenied
        label, service, _, warning = self.ACTIONS[action]
        back = reverse("admin:campaigns_bulkjob_change", args=[job.pk])
        if request.method == "POST":
            try:
                service(campaign=job)
            except services.CampaignError as err:
                messages.error(request, str(err))
            else:
                self.log_change(request, job, label)
                messages.success(request, f"{label}: done.")
            return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{label} job {job.pk}?",
            "job": job,
            "label": label,
            "warning": warning,
            "back": back,
        }
        return TemplateResponse(request, "admin/campaigns/bulkjob/confirm.html", context)
