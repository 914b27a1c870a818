"""SES event files (Kinesis Firehose to S3, JSON lines, gzip or not) imported idempotently."""

import contextlib
import gzip
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tracking.models import Event
from tracking.ses_events.parse import SesEventError, ses_events_parse
from tracking.ses_events.record import ses_events_record

logger = logging.getLogger(__name__)

# -- event files ---------------------------------------------------------------------------------


@dataclass
class FileSummary:
    path: str
    events: int = 0
    recorded: int = 0
    duplicate: int = 0
    pending: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    error: str = ""  # the file could not be read at all


def ses_event_files(*, path: Path) -> list[Path]:
    """`path` if it is a file, else every file under it (recursively, hidden ones excepted),
    sorted; FileNotFoundError if there is nothing there."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def ses_event_file_import(*, path: Path) -> FileSummary:
    """Record the SES events of one file: JSON lines of SES event objects (as Kinesis Firehose
    writes them to S3), gzip-compressed or not, or one JSON object (or array) for the whole
    file. Idempotent: events are deduplicated by content. A malformed line is reported with its
    number and skipped; the rest is imported."""
    summary = FileSummary(path=str(path))
    try:
        for lineno, payload, error in _file_objects(path):
            if error:
                summary.malformed.append((lineno, error))
                continue
            try:
                events = ses_events_parse(payload=payload)
            except SesEventError as err:
                summary.malformed.append((lineno, str(err)))
                continue
            summary.events += len(events)
            recorded = ses_events_record(events=events, source=Event.Source.SES_FILE)
            for outcome, n in recorded.items():
                setattr(summary, outcome, getattr(summary, outcome) + n)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        summary.error = f"{type(err).__name__}: {err}"
    logger.info(
        "ses event file imported recorded=%s duplicate=%s pending=%s malformed=%s error=%s",
        summary.recorded,
        summary.duplicate,
        summary.pending,
        len(summary.malformed),
        bool(summary.error),
    )
    return summary


def _open(path: Path):
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def _file_objects(path: Path) -> Iterator[tuple[int, object, str]]:
    """(line number, JSON value, error) for each JSON value of the file."""
    with _open(path) as lines:
        first = True
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            values, error = _line_values(raw)
            if first and error:
                # Not JSON lines from its first line: one JSON document for the whole file?
                whole = _whole_file(path)
                if whole is not None:
                    yield from ((1, value, "") for value in whole)
                    return
            first = False
            if error:
                yield lineno, None, error
            else:
                yield from ((lineno, value, "") for value in values)


def _line_values(raw: bytes) -> tuple[list, str]:
    """The JSON values of one line (Firehose may leave several on a line, back to back)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return [], f"not UTF-8 (byte {err.start})"
    decoder = json.JSONDecoder()
    values, index, text = [], 0, text.strip()
    while index < len(text):
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as err:
            return [], f"invalid JSON: {err.msg} (column {err.colno})"
        values.append(value)
        while index < len(text) and text[index].isspace():
            index += 1
    return values, ""


def _whole_file(path: Path) -> list | None:
    with _open(path) as stream, contextlib.suppress(ValueError):
        value = json.loads(stream.read())
        return value if isinstance(value, list) else [value]
    return None
