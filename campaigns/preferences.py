"""Each admin user's preferences: their time zone and their test-send addresses."""

import functools
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError

from campaigns.addresses import address_normalize
from campaigns.models import UserPreferences


def user_preferences(*, user) -> UserPreferences:
    """The user's preferences; an unsaved default (the site's zone, no addresses) if none."""
    found = UserPreferences.objects.filter(user_id=user.pk).first()
    return found or UserPreferences(user_id=user.pk)


def user_time_zone(*, user) -> zoneinfo.ZoneInfo:
    """The zone this user types and reads times in: theirs if set, else the site's."""
    name = user_preferences(user=user).time_zone or settings.TIME_ZONE
    return zoneinfo.ZoneInfo(name)


@functools.cache
def known_time_zones() -> frozenset[str]:
    """The IANA time zones this machine knows, read from disk once (milliseconds each time:
    an import checks every row's zone)."""
    return frozenset(zoneinfo.available_timezones())


def time_zone_check(name: str) -> str:
    """`name` if it is an IANA time zone this machine knows, else ValidationError."""
    if name not in known_time_zones():
        raise ValidationError(f"“{name}” is not a time zone name such as Europe/Paris.")
    return name


def user_preferences_update(
    *, user, time_zone: str | None = None, proof_addresses: list[str] | None = None
) -> UserPreferences:
    """Store what is given (None leaves a preference as it is), each value checked first."""
    preferences = user_preferences(user=user)
    if time_zone is not None:
        preferences.time_zone = time_zone_check(time_zone) if time_zone else ""
    if proof_addresses is not None:
        normalized = [address_normalize(address) for address in proof_addresses]
        preferences.proof_addresses = list(dict.fromkeys(normalized))
    preferences.save()
    return preferences
