import pytest
from django.core.exceptions import ValidationError

from campaigns.preferences import user_preferences, user_preferences_update, user_time_zone

pytestmark = pytest.mark.django_db


def test_a_user_without_preferences_reads_the_sites_zone_and_no_addresses(admin_user, settings):
    settings.TIME_ZONE = "Europe/Paris"
    assert user_time_zone(user=admin_user).key == "Europe/Paris"
    assert user_preferences(user=admin_user).proof_addresses == []


def test_preferences_are_stored_normalized_and_checked(admin_user):
    user_preferences_update(
        user=admin_user,
        time_zone="America/New_York",
        proof_addresses=[" Ada@Example.COM", "ada@example.com", "bob@example.com"],
    )
    stored = user_preferences(user=admin_user)
    assert stored.time_zone == "America/New_York"
    assert stored.proof_addresses == ["ada@example.com", "bob@example.com"]
    assert user_time_zone(user=admin_user).key == "America/New_York"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "UTC\r\nX"])
def test_an_unknown_time_zone_is_refused(admin_user, zone):
    with pytest.raises(ValidationError, match="not a time zone"):
        user_preferences_update(user=admin_user, time_zone=zone)


def test_a_bad_proof_address_is_refused_and_nothing_changes(admin_user):
    user_preferences_update(user=admin_user, proof_addresses=["ada@example.com"])
    with pytest.raises(ValidationError):
        user_preferences_update(user=admin_user, proof_addresses=["ok@example.com", "a\r\nb@x"])
    assert user_preferences(user=admin_user).proof_addresses == ["ada@example.com"]
