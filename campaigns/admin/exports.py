"""CSV downloads of a campaign's report and ledger, every cell formula-safe."""

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime

from django.db.models import Min, Q
from django.http import (
    HttpResponse,
    StreamingHttpResponse,
)

from campaigns.csv_cells import csv_cell_escape
from campaigns.models import Notification
from tracking.models import FirstEngagement
from tracking.reports.report import CampaignReport, Rate


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
