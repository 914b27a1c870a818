import base64

from django.utils.crypto import salted_hmac

from tracking.tokens import _signature, notification_id_from, token_for


def test_signature_is_djangos_salted_hmac_with_the_key_derived_once():
    for notification_id in (1, 36, 10**12, 2**63 - 1):
        digest = salted_hmac("tracking.token", str(notification_id), algorithm="sha256").digest()
        assert _signature(notification_id) == base64.urlsafe_b64encode(digest).decode()[:16]


def test_token_round_trip_and_a_changed_secret_invalidates(settings):
    token = token_for(12345)
    assert notification_id_from(token) == 12345
    settings.SECRET_KEY = "another-secret-" + "x" * 40
    assert notification_id_from(token) is None
