"""config.settings.demo: the demo's web process trusts the local SES endpoint's SNS signing
certificate (seslocal/events.py), and nothing else does."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.config.test_deploy import base_environment, production_environment

pytestmark = pytest.mark.slow  # spawns Python to read settings afresh

ROOT = Path(__file__).resolve().parents[2]
READ = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps([s.SNS_CERT_HOST, list(s.SNS_CERT_URL_SCHEMES), s.SNS_TOPIC_ARNS]))"
)


def read_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", READ], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def demo_env(tmp_path, **overrides: str) -> dict[str, str]:
    return {
        **base_environment(),
        "DJANGO_SETTINGS_MODULE": "config.settings.demo",
        "DJANGO_DEBUG": "1",
        "MAILWRIGHT_VAR_DIR": str(tmp_path),
        "AWS_ENDPOINT_URL_SESV2": "http://127.0.0.1:8125",
        "SNS_TOPIC_ARNS": "arn:aws:sns:us-east-1:000000000000:mailwright-demo",
        **overrides,
    }


def test_the_demo_trusts_the_local_endpoints_certificate_host_over_http(tmp_path):
    done = read_settings(demo_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [
        "127.0.0.1:8125", ["http"], ["arn:aws:sns:us-east-1:000000000000:mailwright-demo"]
    ]  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 50},  # never with DEBUG off
        {"AWS_ENDPOINT_URL_SESV2": "http://ses.example.com:8025"},  # nor a remote endpoint
    ],
)
def test_the_demo_settings_refuse_to_load_outside_the_demo(tmp_path, overrides):
    done = read_settings(demo_env(tmp_path, **overrides))
    assert done.returncode != 0
    assert "config.settings.demo is for `make demo` only" in done.stderr


def test_production_settings_trust_only_sns_hosts_over_https():
    done = read_settings(production_environment(AWS_ENDPOINT_URL_SESV2="http://127.0.0.1:8025"))
    assert done.returncode == 0, done.stderr
    host, schemes, _ = json.loads(done.stdout.splitlines()[-1])
    assert (host, schemes) == ("sns.{region}.{dns_suffix}", ["https"])
