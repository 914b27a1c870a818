"""The admin's home page for marketers: the latest campaigns with their key rates, the lists
with their sizes and the SES send quota. Each part shows only to a user who may view its
model; the whole page costs a fixed handful of indexed queries however many campaigns there
are and however long their ledgers (rates come from the counters, never the ledger)."""

from dataclasses import dataclass

from django.contrib import admin
from django.db.models import Count
from django.http import HttpRequest
from django.urls import reverse

from campaigns.models import Campaign, ContactList, Membership
from campaigns.quota import quota_remaining, ses_send_quota
from tracking.reports.report import CampaignReport, campaign_summaries

RECENT_CAMPAIGNS = 8
LISTS_SHOWN = 10


@dataclass(frozen=True)
class DashboardCampaign:
    campaign: Campaign
    report: CampaignReport
    url: str


@dataclass(frozen=True)
class DashboardList:
    contact_list: ContactList
    on_list: int  # members not unsubscribed from the list
    url: str


def dashboard_context(*, request: HttpRequest, site: admin.AdminSite) -> dict:
    """The home page's parts, each None when the user may not view what it shows."""
    return {
        "recent_campaigns": _recent_campaigns(request, site),
        "list_sizes": _list_sizes(request, site),
        "send_quota": _send_quota(),
    }


def _may_view(request: HttpRequest, site: admin.AdminSite, model) -> bool:
    return site.is_registered(model) and site.get_model_admin(model).has_view_permission(request)


def _recent_campaigns(request, site) -> list[DashboardCampaign] | None:
    if not _may_view(request, site, Campaign):
        return None
    # Status and recipients come with the reports (the status as the campaign list words it).
    campaigns = list(
        Campaign.objects.filter(kind=Campaign.Kind.CAMPAIGN)
        .only("name", "created_at")
        .order_by("-created_at", "-pk")[:RECENT_CAMPAIGNS]
    )
    reports = campaign_summaries(campaign_ids=[c.pk for c in campaigns])
    return [
        DashboardCampaign(
            campaign=c,
            report=reports[c.pk],
            url=reverse("admin:campaigns_campaign_change", args=[c.pk]),
        )
        for c in campaigns
    ]


def _list_sizes(request, site) -> list[DashboardList] | None:
    """The newest lists with the members still on them (not unsubscribed from the list),
    counted for those lists only: one query on the membership index, where the list page's
    split by who gets mail (audiences.list_counts) joins every member to its contact."""
    if not _may_view(request, site, ContactList):
        return None
    lists = list(ContactList.objects.order_by("-created_at", "-pk")[:LISTS_SHOWN])
    on_list = dict(
        Membership.objects.filter(contact_list__in=lists, unsubscribed_at__isnull=True)
        .values_list("contact_list_id")
        .annotate(n=Count("pk"))
        .values_list("contact_list_id", "n")
    )
    return [
        DashboardList(
            contact_list=contact_list,
            on_list=on_list.get(contact_list.pk, 0),
            url=reverse("admin:campaigns_contactlist_change", args=[contact_list.pk]),
        )
        for contact_list in lists
    ]


def _send_quota() -> str | None:
    """The 24-hour quota in words ("1,200 of 50,000 sent; 48,800 left"), None when SES does
    not answer (the page says "unknown")."""
    quota = ses_send_quota()
    if quota is None:
        return None
    left = quota_remaining(quota)
    if left is None:
        return f"{quota.sent_last_24_hours:,.0f} sent; no daily limit"
    return (
        f"{quota.sent_last_24_hours:,.0f} of {quota.max_24_hour_send:,.0f} sent; "
        f"{left:,.0f} left, at up to {quota.max_send_rate:,.0f} per second"
    )
