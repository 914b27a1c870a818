"""Batch leases: how the sweeper tells a running batch from a dead one (models.BatchLease).

A throttled batch that will be retried leaves a *waiting* lease whose heartbeat lies at its
retry time: the promise that its rows are not lost. A `sending` row no live lease covers is
the remains of a dead batch (`leases_live`, read by the sweeper).
"""

import os
import socket
import time
from datetime import datetime, timedelta

from django.db import DatabaseError
from django.utils import timezone

from campaigns.models import BatchLease

# A running batch beats at least this often (one indexed UPDATE)…
HEARTBEAT_SECONDS = 2.0
# …and one that has not beaten for this long is dead: its worker was killed, lost its
# machine, or hung. Long enough for a busy process to miss a few beats; short enough that a
# killed batch's rows are settled within half a minute (beat sweeps every 10 s).
LEASE_TIMEOUT = timedelta(seconds=20)


def lease_take(*, campaign_id: int, first_id: int, last_id: int) -> int:
    """A new lease on the range, alive from now; its id."""
    return BatchLease.objects.create(
        campaign_id=campaign_id,
        first_id=first_id,
        last_id=last_id,
        heartbeat_at=timezone.now(),
        holder=_holder(),
    ).pk


def lease_beat(*, lease_id: int, until: datetime | None = None) -> None:
    """Keep the lease alive (until `until`, when it waits for a retry; else from now)."""
    BatchLease.objects.filter(pk=lease_id).update(heartbeat_at=until or timezone.now())


def lease_wait(*, campaign_id: int, first_id: int, last_id: int, until: datetime) -> int:
    """A lease for a batch that will be retried at `until`: alive until then (and for
    LEASE_TIMEOUT after), so its `created` rows are not taken for lost meanwhile."""
    return BatchLease.objects.create(
        campaign_id=campaign_id,
        first_id=first_id,
        last_id=last_id,
        heartbeat_at=until,
        holder=f"retry of {_holder()}",
    ).pk


def lease_drop(*, lease_id: int) -> None:
    BatchLease.objects.filter(pk=lease_id).delete()


def leases_live(*, campaign_id: int, now: datetime) -> list[tuple[int, int]]:
    """The (first id, last id) ranges of the campaign's live leases."""
    return list(
        BatchLease.objects.filter(
            campaign_id=campaign_id, heartbeat_at__gte=now - LEASE_TIMEOUT
        ).values_list("first_id", "last_id")
    )


def leases_drop_dead(*, campaign_id: int, now: datetime) -> int:
    """Forget the campaign's dead leases (after their rows were settled); how many."""
    deleted, _ = BatchLease.objects.filter(
        campaign_id=campaign_id, heartbeat_at__lt=now - LEASE_TIMEOUT
    ).delete()
    return deleted


class Heartbeat:
    """A batch's lease, beaten at most every HEARTBEAT_SECONDS however often `beat()` is
    called. A beat that fails (the database is away) is tried again at the next call."""

    def __init__(self, lease_id: int) -> None:
        self.lease_id = lease_id
        self._last = time.monotonic()

    def beat(self) -> None:
        if time.monotonic() - self._last < HEARTBEAT_SECONDS:
            return
        try:
            lease_beat(lease_id=self.lease_id)
        except DatabaseError:
            return  # the caller finds out for itself, and waits for the database
        self._last = time.monotonic()


def _holder() -> str:
    # The pid of this process (a prefork child's own, not its parent's at import).
    return f"{socket.gethostname()}:{os.getpid()}"
