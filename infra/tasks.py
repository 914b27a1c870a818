"""Enqueueing Celery tasks once the transaction that made their work commits."""

from celery import current_app
from django.db import transaction


def task_enqueue_on_commit(name: str, *calls: tuple) -> None:
    """Enqueue the task registered as `name` once per args tuple in `calls`, all in one callback
    once the current transaction commits (at once outside one), so a worker never looks for a
    row that is not there yet. By name: a service need not import the task module that calls
    it back."""

    def enqueue() -> None:
        task = _task(name)
        for args in calls:
            task.delay(*args)

    transaction.on_commit(enqueue)


def _task(name: str):
    tasks = current_app.tasks
    if name not in tasks:  # a web process imports the task modules only when first needed
        current_app.loader.import_default_modules()
    return tasks[name]
