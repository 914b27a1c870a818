"""The pre-send review on the campaign page: Send now and Schedule open this page, which shows
what the send will do (campaigns.review) before a button naming the count; only that button's
POST sends or schedules, through the guarded services, after reviewing again.

Mixed into CampaignAdmin (campaigns/admin/campaigns.py), whose _changeable and _back it uses.
"""

import zoneinfo
from datetime import datetime
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from campaigns import services
from campaigns.linkcheck import MAX_CHECKED_LINKS, link_checks_ensure
from campaigns.models import Campaign, LinkCheck
from campaigns.preferences import user_time_zone
from campaigns.review import GMAIL_CLIP_BYTES, CampaignReview, campaign_review


def wall_time(value: datetime, zone: zoneinfo.ZoneInfo) -> str:
    """An aware time as the user reads it: "Tuesday 05 January 2027, 09:00 (Europe/Paris)"."""
    return f"{timezone.localtime(value, zone):%A %d %B %Y, %H:%M} ({zone.key})"


def duration_words(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    if seconds < 5400:
        return f"about {round(seconds / 60)} minutes"
    return f"about {seconds / 3600:.1f} hours"


class CampaignReviewViews:
    """The review page, its confirmation and the link-check poll."""

    def review_urls(self) -> list:
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/review/", view(self.review_view), name="campaigns_campaign_review"),
            path("<int:pk>/links/", view(self.links_view), name="campaigns_campaign_links"),
        ]

    def review_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        campaign = self._changeable(request, pk)  # view-only users: 403, even to look
        data = request.POST if request.method == "POST" else request.GET
        try:
            send_at = _send_at(data.get("send_at", ""))
        except ValueError:
            messages.error(request, "Enter the date and time to send, e.g. 2030-01-31 09:00.")
            return self._back(pk)
        if campaign.status != Campaign.Status.DRAFT:
            messages.error(
                request,
                f"Only a draft can be sent or scheduled; this campaign is {campaign.status}.",
            )
            return self._back(pk)
        review = campaign_review(campaign=campaign, send_at=send_at)
        # In each contact's own zone (campaigns.waves): only with a time to schedule for.
        local_time = send_at is not None and data.get("local_time") == "1"
        if request.method == "POST":
            done = self._confirm(
                request, campaign, review, data.get("recipients", ""), local_time=local_time
            )
            if done is not None:
                return done
        # Opening the review starts the link check (once per ten minutes for the same links):
        # its results arrive while the marketer reads the rest.
        link_checks_ensure(campaign=campaign, urls=list(review.links))
        return self._review_page(request, campaign, review, local_time=local_time)

    def _confirm(
        self, request, campaign, review: CampaignReview, confirmed: str, *, local_time: bool
    ):
        """Send or schedule if nothing blocks it and the count is the one confirmed; the
        redirect, or None to show the review again (with the reason in a message)."""
        if review.blocked:
            messages.error(request, " ".join(review.blocked))
            return None
        # The count on the button: the services refuse it if the audience is another size now
        # (one rule with the API's expected_recipients). Not a count: it confirms nothing.
        plain = confirmed.isascii() and confirmed.isdigit() and len(confirmed) <= 18
        expected = int(confirmed) if plain else -1
        try:
            if review.send_at is None:
                services.campaign_send_now(campaign=campaign, expected_recipients=expected)
            elif local_time:
                # The wall time as typed: the ISO time keeps the offset of the zone it was
                # typed in. Contacts without a zone get it in this user's zone.
                services.campaign_schedule_local(
                    campaign=campaign,
                    wall=review.send_at.replace(tzinfo=None),
                    fallback_zone=user_time_zone(user=request.user).key,
                    expected_recipients=expected,
                )
            else:
                services.campaign_schedule(
                    campaign=campaign, send_at=review.send_at, expected_recipients=expected
                )
        except services.CampaignAudienceChanged as err:
            messages.warning(
                request,
                f"The audience changed since the review ({err.recipients:,} recipients now): "
                "check and confirm again.",
            )
            return None
        except services.CampaignError as err:
            messages.error(request, str(err))
            return None
        if review.send_at is None:
            self.log_change(request, campaign, f"Send now ({review.recipients} recipients)")
            messages.success(request, f"Sending to {review.recipients:,} recipients.")
        else:
            self.log_change(request, campaign, f"Scheduled for {review.send_at.isoformat()}")
            zone = user_time_zone(user=request.user)
            when = wall_time(review.send_at, zone)
            if local_time:
                when = f"{review.send_at:%Y-%m-%d %H:%M} in each contact's time zone"
            messages.success(request, f"Scheduled for {when}.")
        return self._back(campaign.pk)

    def _review_page(
        self, request, campaign, review: CampaignReview, *, local_time: bool
    ) -> TemplateResponse:
        zone = user_time_zone(user=request.user)
        count = f"{review.recipients:,} recipient{'' if review.recipients == 1 else 's'}"
        if review.send_at is None:
            confirm_label = f"Send to {count} now"
        else:
            confirm_label = f"Schedule for {count} on {wall_time(review.send_at, zone)}"
            if local_time:
                confirm_label = (
                    f"Schedule for {count} at {review.send_at:%Y-%m-%d %H:%M} "
                    "in each contact's time zone"
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": campaign,
            "title": f"Review before sending: {campaign.name}",
            "review": review,
            "send_at_value": "" if review.send_at is None else review.send_at.isoformat(),
            "send_at_words": None if review.send_at is None else wall_time(review.send_at, zone),
            "confirm_label": confirm_label,
            "local_time": local_time,
            "duration": duration_words(review.duration_seconds),
            "rate": f"{review.send_rate:,.1f}".removesuffix(".0"),
            "quota_left": None if review.quota_left is None else f"{review.quota_left:,.0f}",
            "recipients": f"{review.recipients:,}",
            "html_kb": None if review.html_bytes is None else round(review.html_bytes / 1024, 1),
            "clip_kb": GMAIL_CLIP_BYTES // 1024,
            "max_checked_links": MAX_CHECKED_LINKS,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/review.html", context)

    def links_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_change_permission(request, campaign):
            return JsonResponse({"error": "forbidden"}, status=403)
        checks = LinkCheck.objects.filter(campaign=campaign).order_by("pk")
        rows = [
            {"url": c.url, "state": c.get_state_display(), "key": c.state, "status": c.http_status}
            for c in checks
        ]
        return JsonResponse(
            {"checking": any(row["key"] == LinkCheck.State.CHECKING for row in rows), "links": rows}
        )


def review_url(campaign_id: int, send_at: datetime | None = None, local_time: bool = False) -> str:
    url = reverse("admin:campaigns_campaign_review", args=[campaign_id])
    if send_at is None:
        return url
    query = {"send_at": send_at.isoformat(), **({"local_time": "1"} if local_time else {})}
    return f"{url}?{urlencode(query)}"


def _send_at(value: str) -> datetime | None:
    """The time carried between the schedule form, the review and the confirmation: an ISO
    time with its offset (the form turned the user's wall time into it); empty: now."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if timezone.is_naive(parsed):
        raise ValueError("no offset")
    return parsed
