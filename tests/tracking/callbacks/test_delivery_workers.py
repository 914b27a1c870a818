"""A worker SIGKILLed mid-delivery: the receiver gets the event again, with the same id."""

import pytest

from tests.conftest import wait_for
from tests.factories import EventFactory
from tests.tracking.callbacks.receiver import Receiver
from tracking import callbacks
from tracking.models import CallbackDelivery
from tracking.tasks import callbacks_deliver

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_worker_killed_mid_post_leaves_the_delivery_to_be_posted_again(celery_workers, settings):
    settings.CALLBACKS_ALLOW_PRIVATE_TARGETS = True
    receiver = Receiver()
    env = {"CALLBACKS_ALLOW_PRIVATE_TARGETS": "1", "CALLBACK_LEASE_SECONDS": "3"}
    try:
        endpoint = callbacks.endpoint_create(url=receiver.url, event_types=["message.delivered"])
        event = EventFactory(delivered=True)
        assert callbacks.callbacks_fan_out() == 1
        receiver.hold.clear()  # the receiver takes the POST and does not answer
        worker = celery_workers.start(queues="callbacks", env=env)
        callbacks_deliver.delay(endpoint.pk)
        wait_for(lambda: len(receiver.requests) == 1, timeout=30, message="first POST")

        worker.kill()  # mid-delivery: the POST is in flight, nothing recorded
        receiver.hold.set()
        row = CallbackDelivery.objects.get()
        assert (row.status, row.attempts) == (CallbackDelivery.Status.PENDING, 1)

        celery_workers.start(queues="callbacks", env=env)
        # Once the lease (3 s here) has run out, the next dispatch's task claims it again.
        wait_for(
            lambda: callbacks_deliver.delay(endpoint.pk) and len(receiver.requests) >= 2,
            timeout=30,
            interval=1,
            message=f"second POST\n{celery_workers.logs()}",
        )
        wait_for(
            lambda: CallbackDelivery.objects.get().status == CallbackDelivery.Status.DELIVERED,
            timeout=15,
            message="delivered",
        )
        first, second = receiver.requests[:2]
        assert first["headers"]["Mailwright-Event-Id"] == f"evt_{event.pk}"
        assert second["headers"]["Mailwright-Event-Id"] == f"evt_{event.pk}"
        assert first["body"] == second["body"]
        logs = celery_workers.logs()  # (they name the broker's address: not the receiver's)
        assert f":{receiver.server.server_port}" not in logs and "/hooks" not in logs
        assert "callback endpoint" in logs
    finally:
        receiver.close()
