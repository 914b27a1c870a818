"""The campaign page's part of "send at this local time in each contact's time zone": the
waves shown. The option is a field of the schedule form, confirmed on the review; the rules
are campaigns.services and campaigns.waves."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from campaigns import waves
from campaigns.models import Campaign


@dataclass(frozen=True)
class WaveRow:
    wave: waves.Wave
    state: str  # "started", "next", "waiting"


def campaign_wave_rows(*, campaign: Campaign) -> list[WaveRow]:
    """The waves of a local-time campaign that is scheduled or sending, for its page."""
    if campaign.status not in (
        Campaign.Status.SCHEDULED,
        Campaign.Status.SENDING,
        Campaign.Status.PAUSED,
    ):
        return []
    # Started: frozen into the ledger, i.e. before the wave beat waits for (next_wave_at);
    # with none set, a wave is being frozen now, or all are.
    started_before = campaign.next_wave_at or timezone.now() + timedelta(microseconds=1)
    if campaign.frozen_at:
        started_before = datetime.max.replace(tzinfo=UTC)
    rows, next_seen = [], False
    for wave in waves.campaign_waves(campaign=campaign):
        if campaign.status != Campaign.Status.SCHEDULED and wave.moment < started_before:
            state = "started"
        elif not next_seen:
            state, next_seen = "next", True
        else:
            state = "waiting"
        rows.append(WaveRow(wave=wave, state=state))
    return rows
