"""`python -m tracking.buffer` as it is deployed: a process of its own, below the web server's
CPU priority (TRACKING_FLUSHER_NICE), so requests come first on a shared machine."""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, _test_database_url, stop_process


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
            [sys.executable, "-m", "tracking.buffer"], cwd=ROOT, env=env, stdout=out,
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
