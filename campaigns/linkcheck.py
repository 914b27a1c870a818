"""The pre-send review's link check: each tracked link of a campaign's template fetched once,
in the background, and what it answered stored (LinkCheck) for the review page to poll.

A check informs the marketer; it never holds a send back, and a link that does not answer in
time is "could not check", not broken. Logs carry the campaign id and counts, never a URL (a
link may carry credentials or a recipient's data in its query).
"""

import logging
import urllib.error
import urllib.request
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign, LinkCheck
from infra.addresses import host_public_addresses
from infra.tasks import task_enqueue_on_commit

logger = logging.getLogger(__name__)

LINKS_CHECK_TASK = "campaigns.tasks.links_check"
# A newsletter has tens of links; past this many the rest are left unchecked (listed as such),
# so one review cannot keep a worker busy for long: 50 × 5 s is at most about 4 minutes.
MAX_CHECKED_LINKS = 50
LINK_TIMEOUT_SECONDS = 5.0
# A review opened again within this time shows the earlier results rather than checking again.
FRESH_FOR = timedelta(minutes=10)
USER_AGENT = "Mailwright link check (pre-send review)"

S = LinkCheck.State


def link_checks_ensure(*, campaign: Campaign, urls: list[str]) -> None:
    """Start a check of `urls` (the first MAX_CHECKED_LINKS) unless one of exactly these links
    is under way or recent; the task runs once this transaction commits."""
    urls = list(dict.fromkeys(urls))[:MAX_CHECKED_LINKS]
    checks = list(LinkCheck.objects.filter(campaign=campaign).order_by("pk"))
    same = [check.url for check in checks] == urls
    recent = all(check.checked_at > timezone.now() - FRESH_FOR for check in checks)
    if same and (recent or any(check.state == S.CHECKING for check in checks)):
        return
    with transaction.atomic():
        LinkCheck.objects.filter(campaign=campaign).delete()
        LinkCheck.objects.bulk_create(LinkCheck(campaign=campaign, url=url) for url in urls)
    if urls:
        task_enqueue_on_commit(LINKS_CHECK_TASK, (campaign.pk,))


def links_check(*, campaign_id: int) -> dict[str, int]:
    """Fetch each link of the campaign still `checking` and store its answer; the count of
    each outcome."""
    outcomes = {state: 0 for state in (S.OK, S.BROKEN, S.UNREACHABLE)}
    for check in LinkCheck.objects.filter(campaign_id=campaign_id, state=S.CHECKING):
        state, status = link_answer(check.url)
        LinkCheck.objects.filter(pk=check.pk).update(
            state=state, http_status=status, checked_at=timezone.now()
        )
        outcomes[state] += 1
    logger.info("campaign %s links checked %s", campaign_id, outcomes)
    return outcomes


def link_answer(url: str) -> tuple[str, int | None]:
    """(state, HTTP status) for one link: a GET (some servers refuse HEAD) whose body is not
    read, redirects followed; only http and https, without credentials, and only to public
    addresses (each redirect too) unless LINK_CHECK_PRIVATE_ADDRESSES."""
    if not _fetchable(url):
        return S.UNREACHABLE, None
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
    opener = urllib.request.build_opener(_CheckedRedirects)
    try:
        with opener.open(request, timeout=LINK_TIMEOUT_SECONDS) as answer:
            status = answer.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (OSError, ValueError):  # refused, timed out, no such host, TLS, bad URL
        return S.UNREACHABLE, None
    return (S.BROKEN if status >= 400 else S.OK), status


def _fetchable(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return False
    return settings.LINK_CHECK_PRIVATE_ADDRESSES or _public_host(parts.hostname)


def _public_host(hostname: str) -> bool:
    """Whether every address the name has is a public one. The check fetches what a marketer
    typed from inside the servers' network (infra.addresses: the rule all such fetches share)."""
    return host_public_addresses(hostname) is not None


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to where the first request may go (a public page must not
    bounce the check onto a private address)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not _fetchable(newurl):
            raise urllib.error.URLError("redirect to an address the check does not fetch")
        return super().redirect_request(req, fp, code, msg, headers, newurl)
