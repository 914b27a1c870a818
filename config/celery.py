"""The Celery app. Tasks live in each app's tasks.py and stay thin: they call services."""

import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("mailwright")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def close_old_connections(task=None, **_) -> None:
    """Before each task, as Django before each request: drop database connections that are
    broken (health checks on) or older than CONN_MAX_AGE (CELERY_DB_REUSE_MAX: why). Not for
    a task run eagerly, inside its caller's transaction (Celery's own fixup skips those too)."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
