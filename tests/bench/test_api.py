"""make bench-api, run for two seconds: it starts, drives the API, follows every 202 to SES and
ends with its JSON line (a benchmark nobody runs breaks unseen)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (make bench-api)")
@pytest.mark.skipif(
    not os.environ.get("CELERY_BROKER_URL", "").startswith("redis"),
    reason="needs scripts/with-services.sh's Redis",
)
@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.e2e
def test_bench_api_follows_every_accepted_message_to_ses(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL_SESV2"}
    # Its own database beside the suite's: the bench migrates and fills it.
    env["DATABASE_URL"] = env["DATABASE_URL"].rsplit("/", 1)[0] + "/bench_api_smoke"
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "bench/api.py", "--seconds", "2", "--connections", "2",
         "--threads", "1", "--web-workers", "1", "--worker-concurrency", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["answers"] == {"202": report["requests"]}
    assert report["requests"] > 0 and report["accepted_per_s"] > 0
    assert report["lost"] == 0 and report["duplicates"] == 0
    assert 0 < report["handoff_p50_s"] <= report["handoff_p99_s"]
    assert report["p50_ms"] <= report["p99_ms"]
    assert all(report[f"cpu_s_per_1000_{k}"] > 0 for k in ("web", "worker", "postgres"))
    assert report["cpu_reference_ms"] > 0
