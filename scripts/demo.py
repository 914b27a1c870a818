"""`make demo`: migrate an embedded SQLite database, load demo data, then run the web app, a
Celery worker, beat and the local SES endpoint in the foreground until Ctrl-C (with honcho).
tests/e2e/test_demo_defaults.py prepares and runs the same processes on a folder of its own."""

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The SNS topic the local endpoint publishes SES's events as, and the webhook pins.
DEMO_TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:mailwright-demo"
# The SES webhook's basic auth (user:password), which the local endpoint posts with.
DEMO_WEBHOOK_SECRET = "demo:demo-webhook-secret"  # noqa: S105 (the demo's, on this machine)

DEMO_ENV = {
    "DJANGO_DEBUG": "1",
    # The embedded defaults, trusting the local endpoint's SNS certificate (nothing else does).
    "DJANGO_SETTINGS_MODULE": "config.settings.demo",
    # Any SES-compatible endpoint is chosen the standard boto3 way; the demo uses its own.
    "AWS_ENDPOINT_URL_SESV2": "http://127.0.0.1:8025",
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",  # the local endpoint accepts any credentials
    "TRACKING_BASE_URL": "http://127.0.0.1:8000",
    "ANYMAIL_WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET,
    # The local endpoint publishes SES's events (Send, Delivery, Bounce, Complaint) to the
    # webhook a second after each send, as SNS notifications of this topic, signed with its own
    # certificate (seslocal/events.py; docs/LOCAL_SES.md).
    "SNS_TOPIC_ARNS": DEMO_TOPIC_ARN,
    "SESLOCAL_EVENTS_TOPIC_ARN": DEMO_TOPIC_ARN,
    "SESLOCAL_EVENTS_WEBHOOK": (
        f"http://{DEMO_WEBHOOK_SECRET}@127.0.0.1:8000/webhooks/anymail/amazon_ses/tracking/"
    ),
    "CAMPAIGN_START_POLL_SECONDS": "5",
}


def demo_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The demo's settings under `environ` (which wins), with this Python's tools first on PATH."""
    env = {**DEMO_ENV, **environ}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def demo_prepare(*, env: Mapping[str, str]) -> None:
    """What the processes need before they start: the broker's folders (kombu's file-system
    transport does not create them) and the database's tables, in the folder the settings
    use (MAILWRIGHT_VAR_DIR, as config.env reads it)."""
    var = Path(env.get("MAILWRIGHT_VAR_DIR", ROOT / "var"))
    for folder in ("processed", "control"):
        (var / "broker" / folder).mkdir(parents=True, exist_ok=True)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], check=True, env=env, cwd=ROOT)


def main() -> int:
    env = demo_environment(os.environ)
    demo_prepare(env=env)
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "demo_setup"], check=True, env=env, cwd=ROOT
    )
    try:
        return subprocess.call(
            [str(BIN / "honcho"), "-f", str(ROOT / "Procfile.demo"), "start"], env=env, cwd=ROOT
        )
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
