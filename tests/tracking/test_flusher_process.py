"""`manage.py flush_buffers` as it is deployed: a process of its own, below the web server's
CPU priority (TRACKING_FLUSHER_NICE), so requests come first on a shared machine; beside
granian's worker processes, whose hits it records, floods capped once for all of them."""

import os
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Notification
from campaigns.tokens import token_for
from infra import queue
from tests.conftest import (
    ROOT,
    _free_port,
    _test_database_url,
    redis_buffer,
    stop_process,
    wait_for,
)
from tests.factories import CampaignLinkFactory, NotificationFactory
from tracking.hits import buffer as hits_buffer
from tracking.models import Event

pytestmark = pytest.mark.e2e


@pytest.mark.django_db(transaction=True)
def test_the_flusher_runs_below_the_web_servers_cpu_priority(tmp_path):
    log = tmp_path / "flusher.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
        "LOG_LEVEL": "INFO",
        "TRACKING_FLUSHER_NICE": "7",
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "flush_buffers"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "tracking flusher started" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == min(ours + 7, 19)
        assert f"priority lowered to nice {min(ours + 7, 19)}" in log.read_text()
    finally:
        stop_process(process, grace=10)


@pytest.mark.django_db(transaction=True)
def test_a_flood_through_two_web_processes_is_capped_once_and_recorded(tmp_path):
    """As deployed: granian with 2 worker processes, the buffer on (lingering pushes), the
    flusher beside them. A flood of one token, spread over both processes, stores the cap
    once (the count is Redis's, shared), not once per process; the rest is counted dropped."""
    link = CampaignLinkFactory(index=0, url="https://example.com/a")
    notification = NotificationFactory(campaign=link.campaign, sent=True, message_id="m-flood")
    Notification.objects.filter(pk=notification.pk).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
        "LOG_LEVEL": "WARNING",
        "TRACKING_BUFFER": "true",
        "TRACKING_FLUSH_IN_WEB": "false",
        "TRACKING_REPEAT_CAP": "5",
        "TRACKING_REPEAT_WINDOW_SECONDS": "3600",
    }
    web_log, flusher_log = tmp_path / "web.log", tmp_path / "flusher.log"
    with redis_buffer("tracking:*"), web_log.open("w") as web_out, flusher_log.open("w") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "2", "--blocking-threads", "1",
             "--no-access-log", "config.wsgi:application"],
            cwd=ROOT, env=env, stdout=web_out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        flusher = subprocess.Popen(
            [sys.executable, "manage.py", "flush_buffers"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"

            def fetch(path: str) -> int:
                request = urllib.request.Request(url + path, headers={"User-Agent": "Mail/1.0"})  # noqa: S310
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    return response.status

            def answering() -> bool:
                assert web.poll() is None, web_log.read_text()
                try:
                    return fetch("/t/o/x.gif") == 200
                except OSError:
                    return False

            wait_for(answering, timeout=60, message="granian answering")
            pixel = f"/t/o/{token_for(notification.pk)}.gif"
            statuses = []

            def flood() -> None:  # several connections at once, so both processes serve
                statuses.extend(fetch(pixel) for _ in range(20))

            threads = [threading.Thread(target=flood) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert statuses == [200] * 120
            wait_for(
                lambda: (
                    hits_buffer.buffer_dropped()["repeat"] == 115
                    and queue.buffer_backlog(queue=hits_buffer.QUEUE) == {"queued": 0, "claimed": 0}
                    and Event.objects.count() == 5
                ),
                timeout=30,
                message=f"flushed: {flusher_log.read_text()}",
            )
            time.sleep(1)  # nothing else comes later
            assert Event.objects.filter(notification=notification, type="opened").count() == 5
        finally:
            stop_process(web, grace=10)
            stop_process(flusher, grace=10)
