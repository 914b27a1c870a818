"""The SES events buffer (ESP_EVENTS_BUFFER): the webhook queues, a flusher records in batches."""

import json
import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, OperationalError

from infra import queue as buffer
from tracking.models import Event
from tracking.ses_events.parse import SesEvent, SesEventError, ses_event_parse, ses_event_recipients
from tracking.ses_events.record import RECORDED, ses_events_record

logger = logging.getLogger(__name__)

# -- the buffer (ESP_EVENTS_BUFFER) -------------------------------------------------------------
# The webhook (tracking.ses_events.webhook), once an SNS message is verified, pushes its SES
# event to this Redis list and answers 200, a small share of recording it (docs/PERFORMANCE.md); a
# thread of `manage.py flush_buffers` claims batches of up to buffer.BATCH_SIZE and records them
# with ses_events_record. Claims, leases and take-overs are infra.queue's (see its docstring).
# A record: "2<TAB>SNS MessageId<TAB>SES event object as SNS carried it (JSON)". The flusher
# splits it per recipient (ses_event_recipients: anymail's rules), so the request does not build
# anymail's per-recipient events only to serialise them again, nor quote the event inside
# another JSON document (docs/PERFORMANCE.md). A record of another format is kept aside in
# ESP_EVENTS_DEAD_LETTERS, not lost.

ESP_EVENTS_QUEUE = "esp:events"
ESP_EVENTS_DEAD_LETTERS = "esp:events:dead"  # records that cannot be recorded: for a person
_RECORD_FORMAT = 2


def esp_events_buffer_enabled() -> bool:
    """Buffered intake is on (ESP_EVENTS_BUFFER) and there is a Redis to buffer in."""
    return (
        bool(getattr(settings, "ESP_EVENTS_BUFFER", False)) and buffer.buffer_client() is not None
    )


def esp_events_buffer_push(*, sns_id: str, message: str) -> bool:
    """Queue the SES event an SNS Notification carries (one RPUSH): `message` as SNS carried
    it, which the caller found to be a JSON object; `sns_id` its SNS MessageId, checked by
    tracking.ses_events.sns (no tab or line break). False if Redis did not take it (down, or the
    buffer full: ESP_EVENTS_BUFFER_MAX): the caller records it directly, so a flusher that cannot
    keep up slows the webhook down instead of filling Redis, which is the broker too."""
    record = f"{_RECORD_FORMAT}\t{sns_id}\t{message}"
    return buffer.buffer_push(
        record=record, queue=ESP_EVENTS_QUEUE, max_records=settings.ESP_EVENTS_BUFFER_MAX
    )


def _record_loads(raw: bytes | str) -> tuple[str, list[tuple[str, dict]]]:
    """(SNS MessageId, [(recipient, SES event object)…]) of a record, its recipients those on
    the message (ses_event_recipients); SesEventError if none is, ValueError if unreadable."""
    raw = raw.encode() if isinstance(raw, str) else raw
    fmt, _, rest = raw.partition(b"\t")
    if fmt != str(_RECORD_FORMAT).encode():
        raise ValueError("unknown record format")
    sns_id, _, message = rest.partition(b"\t")
    try:
        payload = json.loads(message)
    except (TypeError, ValueError) as err:
        raise ValueError(f"unreadable record: {type(err).__name__}") from None
    if not isinstance(payload, dict):
        raise ValueError("unreadable record: not an object")
    recipients = ses_event_recipients(payload)
    if not recipients:
        ses_event_parse(payload=payload, recipient="")  # the more precise error, if any
        raise SesEventError("no recipient of the event is on its message")
    return sns_id.decode(errors="replace"), [(r, payload) for r in recipients]


def esp_events_buffer_flush(*, max_batches: int = 50, lease_seconds: float | None = None) -> int:
    """Record what the events buffer holds, batch by batch; returns how many were recorded
    (duplicates and pending ones not included). Safe to run in several processes at once.

    As tracking.hits.buffer.tracking_buffer_flush: dead flushers' batches are taken over first; a
    batch whose database is unreachable stays claimed (retried after its lease); one that fails
    otherwise is retried event by event, and an event that fails alone is kept in
    ESP_EVENTS_DEAD_LETTERS (logged by id)."""
    return buffer.buffer_drain(
        queue=ESP_EVENTS_QUEUE,
        flush_batch=_flush_batch,
        max_batches=max_batches,
        lease_seconds=lease_seconds,
    )


def _flush_batch(key: str, items: list[bytes]) -> int:
    parsed: list[tuple[bytes, SesEvent]] = []
    for raw in items:
        try:
            sns_id, recipients = _record_loads(raw)
        except SesEventError as err:  # as ses_payload_record: not an event we can record
            logger.warning("ses event not recorded batch=%s reason=%s", key, str(err))
            continue
        except ValueError as err:
            logger.error("ses event record unreadable, kept aside batch=%s: %s", key, str(err))
            _dead_letter(raw)
            continue
        for recipient, payload in recipients:
            try:
                parsed.append((raw, ses_event_parse(payload=payload, recipient=recipient)))
            except SesEventError as err:  # as ses_payload_record: not an SES sending event
                logger.warning("ses event not recorded sns_id=%s reason=%s", sns_id[:100], str(err))
    try:
        recorded = ses_events_record(events=[e for _, e in parsed], source=Event.Source.SES)[
            RECORDED
        ]
    except OperationalError:
        raise  # the database is unreachable: the batch stays claimed and is retried
    except DatabaseError:
        logger.exception("ses events batch failed batch=%s events=%d: one by one", key, len(items))
        recorded = 0
        kept_aside: set[bytes] = set()  # a record of several recipients is kept aside once
        for raw, event in parsed:
            try:
                recorded += ses_events_record(events=[event], source=Event.Source.SES)[RECORDED]
            except OperationalError:
                raise
            except DatabaseError:
                logger.exception("ses event kept aside id=%s", event.esp_event_id)
                if raw not in kept_aside:
                    kept_aside.add(raw)
                    _dead_letter(raw)
    buffer.buffer_ack(key=key, queue=ESP_EVENTS_QUEUE)
    return recorded


def _dead_letter(raw: bytes | str) -> None:
    client = buffer.buffer_client()
    if client is not None:
        client.rpush(ESP_EVENTS_DEAD_LETTERS, raw)


# The head of the events buffer as this process last saw it, and since when: (record, monotonic).
_head_seen: tuple[bytes, float] | None = None


def esp_events_flush_if_late(*, after_seconds: float) -> int | None:
    """Flush the events buffer from this process if the same record has waited at its head
    for more than `after_seconds` (no flusher is taking records), else None; how many events
    were recorded. Records carry no arrival time (an event's own timestamp can be days old on
    an SNS redelivery), so waiting is judged by the head not moving: a running flusher moves
    it every TRACKING_FLUSH_INTERVAL_MS (0.5 s)."""
    global _head_seen
    head = buffer.buffer_oldest(queue=ESP_EVENTS_QUEUE)
    now = time.monotonic()
    if head is None or _head_seen is None or _head_seen[0] != head:
        _head_seen = None if head is None else (head, now)
        return None
    if now - _head_seen[1] <= after_seconds:
        return None
    logger.warning(
        "ses events waited %.0f s at the head of the buffer: flushing from this process "
        "(is `manage.py flush_buffers` running?)",
        now - _head_seen[1],
    )
    _head_seen = None
    return esp_events_buffer_flush()


def esp_events_flusher_start() -> threading.Thread | None:
    """Start the events buffer's flush loop in a thread of this process (`manage.py
    flush_buffers`) if there is a Redis: also with ESP_EVENTS_BUFFER off, so events queued
    while it was on are still recorded."""
    if buffer.buffer_client() is None:
        return None
    thread = threading.Thread(
        target=buffer.buffer_flush_forever,
        args=(esp_events_buffer_flush,),
        kwargs={"name": "ses events"},
        name="esp-events-flusher",
        daemon=True,
    )
    thread.start()
    logger.info("ses events flusher started")
    return thread


def esp_events_flusher_ensure() -> None:
    """Start this process's safety-net flusher of the SES events (infra.queue)."""
    buffer.buffer_web_flusher_ensure(
        name="ses events",
        flush_if_late=lambda: esp_events_flush_if_late(
            after_seconds=buffer.WEB_FLUSH_AFTER_SECONDS
        ),
    )
