"""manage.py import_ses_events PATH: SES event files (Kinesis Firehose → S3) into the database."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from tracking.ses_events.files import ses_event_file_import, ses_event_files


class Command(BaseCommand):
    help = (
        "Import SES event records from a file or a folder (recursively): JSON lines as Kinesis "
        "Firehose writes them to S3, gzip-compressed or not, or one JSON object per file. "
        "Idempotent: an event already recorded (from SNS or an earlier import) is skipped."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="an event file, or a folder of them")

    def handle(self, *args, path: str, verbosity: int = 1, **options) -> None:
        try:
            files = ses_event_files(path=Path(path))
        except FileNotFoundError as err:
            raise CommandError(str(err)) from None
        totals = {"files": 0, "events": 0, "recorded": 0, "duplicate": 0, "pending": 0}
        problems = 0
        for file in files:
            summary = ses_event_file_import(path=file)
            totals["files"] += 1
            for name in ("events", "recorded", "duplicate", "pending"):
                totals[name] += getattr(summary, name)
            self.stdout.write(
                f"{summary.path}: {summary.events} events, {summary.recorded} recorded, "
                f"{summary.duplicate} already recorded, {summary.pending} pending "
                f"(message not known yet), {len(summary.malformed)} malformed lines"
            )
            for lineno, reason in summary.malformed:
                self.stderr.write(f"{summary.path}:{lineno}: malformed, skipped: {reason}")
            if summary.error:
                self.stderr.write(f"{summary.path}: not read: {summary.error}")
            problems += len(summary.malformed) + bool(summary.error)
        self.stdout.write(
            f"total: {totals['files']} files, {totals['events']} events, "
            f"{totals['recorded']} recorded, {totals['duplicate']} already recorded, "
            f"{totals['pending']} pending, {problems} problems"
        )
        if problems:
            # Everything readable was imported; a non-zero exit tells scripts to look.
            raise CommandError(f"{problems} malformed lines or unreadable files (listed above)")
