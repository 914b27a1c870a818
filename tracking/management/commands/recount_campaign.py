"""Rebuild a campaign's report counters from its ledger and events, or check them for drift.

    manage.py recount_campaign 42           # rebuild (prints what changed)
    manage.py recount_campaign 42 --check   # compare only; exits 1 if any counter drifted

Only the counters the report reads are rebuilt (docs/REPORTS.md, Recount). Prints counter
names and numbers, never addresses.
"""

import logging

from django.core.management.base import BaseCommand, CommandError

from campaigns.models import Campaign
from tracking.reports.recount import counters_rebuild

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Rebuild a campaign's report counters from its ledger and events (or --check them)."

    def add_arguments(self, parser):
        parser.add_argument("campaign_id", type=int)
        parser.add_argument(
            "--check",
            action="store_true",
            help="only compare the stored counters with a recount; exit status 1 on drift",
        )

    def handle(self, *args, campaign_id: int, check: bool, **options):
        if not Campaign.objects.filter(pk=campaign_id).exists():
            raise CommandError(f"There is no campaign with id {campaign_id}.")
        drift = counters_rebuild(campaign_id=campaign_id, apply=not check)
        for name, (was, now) in drift.items():
            self.stdout.write(f"{name}: {was} -> {now}")
        logger.info(
            "recount campaign=%s drifted=%s check=%s",
            campaign_id, len(drift), check,
        )  # fmt: skip
        if check and drift:
            raise CommandError(f"{len(drift)} of the campaign's counters drifted (shown above).")
        outcome = f"{len(drift)} rebuilt" if drift else "all match"
        self.stdout.write(f"campaign {campaign_id}: {outcome}")
