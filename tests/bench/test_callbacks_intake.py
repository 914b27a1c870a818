"""make bench-callbacks CALLBACKS_WITH_INTAKE=1, run for two seconds: it starts the intake,
the callbacks worker and the receiver together, and ends with its JSON line, every stored
event's callback received once (a benchmark nobody runs breaks unseen)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
@pytest.mark.skipif(
    not os.environ.get("CELERY_BROKER_URL", "").startswith("redis"),
    reason="needs scripts/with-services.sh's Redis",
)
@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.e2e
def test_bench_callbacks_with_intake_delivers_every_stored_event_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL_SESV2"}
    # Its own database beside the suite's: the bench migrates and fills it.
    env["DATABASE_URL"] = env["DATABASE_URL"].rsplit("/", 1)[0] + "/bench_callbacks_smoke"
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "bench/callbacks_intake.py", "--seconds", "2", "--events", "1500",
         "--workers", "1", "--connections", "2", "--rate", "300"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["events_stored"] > 0
    assert report["delivered"] == report["events_stored"] == report["posts"]
    assert report["missing"] == report["duplicates"] == report["bad_signatures"] == 0
    assert report["intake_failed"] == 0 and report["intake_events_per_s"] > 0
    assert report["intake_lost"] == 0 and report["repeated_answers"] == 0  # paced, 1,500 bodies
    assert report["probes"] > 0 and 0 < report["lag_p50_s"] <= report["lag_p99_s"]
    assert 0 < report["stored_lag_p50_s"] <= report["stored_lag_p99_s"]
    assert report["cpu_us_per_callback_worker"] > 0
    assert report["cpu_reference_ms"] > 0
