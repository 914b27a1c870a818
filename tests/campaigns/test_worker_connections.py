"""A worker process keeps its database connection from task to task, and replaces one that
broke: Celery's Django fixup would otherwise close it around every task (a new PostgreSQL
backend per batch of 500)."""

import pytest
from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun
from django.db import connection

from campaigns.tasks import deliver_batch
from config.celery import app


def _run_task_signals(fixup: DjangoWorkerFixup) -> None:
    """What a worker does around a task (not eager), without running it."""
    fixup.on_task_prerun(sender=deliver_batch)
    task_prerun.send(sender=deliver_batch, task_id="t", task=deliver_batch, args=(), kwargs={})
    fixup.on_task_postrun(sender=deliver_batch)
    task_postrun.send(sender=deliver_batch, task_id="t", task=deliver_batch, args=(), kwargs={})


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_database_connection_across_tasks():
    fixup = DjangoWorkerFixup(app)
    connection.ensure_connection()
    kept = connection.connection
    for _ in range(3):
        _run_task_signals(fixup)
    assert connection.connection is kept


@pytest.mark.django_db(transaction=True)
def test_a_broken_connection_is_replaced_before_the_next_task():
    fixup = DjangoWorkerFixup(app)
    connection.ensure_connection()
    broken = connection.connection
    broken.close()  # as when PostgreSQL restarts
    _run_task_signals(fixup)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert connection.connection is not broken
