"""Rebuild a campaign's report counters from its ledger and events, or check them for drift.

    manage.py recount_campaign 42           # rebuild (prints what changed)
    manage.py recount_campaign 42 --check   # compare only; exits 1 if any counter drifted

For campaigns sent before counters existed, and to check that the writers' counts match the
rows. Only the counters the report reads are rebuilt (tracking.selectors.counter_is_recounted);
any other name is left alone. Prints counter names and numbers, never addresses.
"""

import logging

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from campaigns.models import Campaign
from tracking.counters import campaign_counters, counters_add
from tracking.models import CampaignCounter
from tracking.selectors import campaign_counters_recount, counter_is_recounted

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
        with transaction.atomic():
            if not check and connection.vendor == "postgresql":
                # Writers add to counters in the same transaction as the rows they count. This
                # lock waits for every writer holding counter rows to commit, and holds back
                # new ones until the rebuild commits: a writer blocked here has not committed
                # its row, so the recount misses it and its delta lands on top of the rebuilt
                # value; nothing is counted twice or lost. It pauses every campaign's counter
                # writes for the recount's duration (seconds at a million recipients).
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"LOCK TABLE {CampaignCounter._meta.db_table} IN SHARE ROW EXCLUSIVE MODE"
                    )
            recounted = campaign_counters_recount(campaign_id=campaign_id)
            stored = {
                name: value
                for name, value in campaign_counters(campaign_id=campaign_id).items()
                if counter_is_recounted(name)
            }
            drift = {
                name: (stored.get(name, 0), recounted.get(name, 0))
                for name in sorted(stored.keys() | recounted.keys())
                if stored.get(name, 0) != recounted.get(name, 0)
            }
            if not check and drift:
                CampaignCounter.objects.filter(campaign_id=campaign_id, name__in=stored).delete()
                counters_add(campaign_id=campaign_id, deltas=recounted)

        for name, (was, now) in drift.items():
            self.stdout.write(f"{name}: {was} -> {now}")
        logger.info(
            "recount campaign=%s counters=%s drifted=%s check=%s",
            campaign_id, len(recounted), len(drift), check,
        )  # fmt: skip
        if check and drift:
            raise CommandError(f"{len(drift)} of the campaign's counters drifted (shown above).")
        outcome = f"{len(drift)} rebuilt" if drift else "all match"
        self.stdout.write(f"campaign {campaign_id}: {len(recounted)} counters, {outcome}")
