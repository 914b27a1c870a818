"""Enqueueing Celery tasks once the transaction that made their work commits."""

import logging

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerUnavailable

logger = logging.getLogger(__name__)


def task_enqueue_on_commit(name: str, *calls: tuple) -> None:
    """Enqueue the task registered as `name` once per args tuple in `calls`, all in one callback
    once the current transaction commits (at once outside one), so a worker never looks for a
    row that is not there yet. By name: a service need not import the task module that calls
    it back.

    A broker that cannot take them (down, unreachable: kombu's OperationalError after Celery's
    publish retries) is logged, with the task's name and ids only, and the caller carries on.
    The work they were for is committed, and every task enqueued this way has a sweeper that
    finds work whose task never came (docs/DATAFLOW.md); raising here, after the commit, would
    turn a request that stored its work into a 5xx, which its client would send again."""

    def enqueue() -> None:
        task = task_named(name)
        for done, args in enumerate(calls):
            try:
                task.delay(*args)
            except BrokerUnavailable as err:
                # Tasks take ids only, so their args may be logged; the exception's text is
                # not (it may name the broker's URL).
                logger.error(
                    "task %s not enqueued (%s): %s of %s left to the sweepers, first %s",
                    name, type(err).__name__, len(calls) - done, len(calls), args,
                )  # fmt: skip
                return  # the broker is away: the rest would wait for the same timeouts

    transaction.on_commit(enqueue)


def task_named(name: str):
    """The task registered as `name` (a caller need not import the task module)."""
    tasks = current_app.tasks
    if name not in tasks:  # a web process imports the task modules only when first needed
        current_app.loader.import_default_modules()
    return tasks[name]
