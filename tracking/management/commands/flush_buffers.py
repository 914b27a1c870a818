"""`manage.py flush_buffers`: the flusher process that records what the Redis buffers hold (the
tracking hits, and in a thread of its own the SES events), one per deployment (more are safe:
batches are claimed). Runs until stopped."""

import logging
import os

from django.conf import settings
from django.core.management.base import BaseCommand

from infra.queue import buffer_flush_forever
from tracking.hits.buffer import tracking_buffer_flush
from tracking.ses_events.buffer import esp_events_flusher_start

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Record the tracking hits and SES events buffered in Redis, until stopped."

    def handle(self, *args, **options) -> None:
        if settings.TRACKING_FLUSHER_NICE:  # requests first (config/settings/tracking.py)
            niceness = os.nice(settings.TRACKING_FLUSHER_NICE)
            logger.info("flusher priority lowered to nice %d", niceness)
        # SES events are flushed by a thread of this same process (also with ESP_EVENTS_BUFFER
        # off, so events queued while it was on are still recorded); each flusher has its own
        # database connection.
        esp_events_flusher_start()
        buffer_flush_forever(tracking_buffer_flush, name="tracking")
