"""`make demo`'s embedded defaults, end to end: a fresh SQLite database and the file-system
broker, with the processes Procfile.demo runs (the local SES endpoint, the web app, a Celery
worker, beat), as scripts/demo.py prepares them, on a folder of the test's own.

None of the PostgreSQL or Redis that `make test` starts is used: the processes get no
environment but the demo's (tests.config.test_deploy.base_environment), so every setting falls back
to its embedded default, as in the demo. This is what runs the SQLite side of the code that
branches on the database: the claim and the recording of a send (campaigns.ledger), the
direct tracking path (tracking.hits.record, tracking.hits.lookups), an SES event
(tracking.ses_events.record), a recount (tracking.reports.recount) and the migrations.
"""

import json
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.config.test_deploy import base_environment, request
from tests.conftest import SesEndpoint, _free_port, wait_for
from tests.sns_signing import ses_sample

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RECIPIENTS = 100
# The first link of the demo's template (campaigns/management/commands/demo_setup.py).
SPRING = "https://example.com/spring?utm_source=demo"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class Demo:
    """The demo's processes on `var`, with the local endpoint and the web app on free ports."""

    def __init__(self, var: Path):
        self.var = var
        self.ses_port, self.web_port = _free_port(), _free_port()
        demo = runpy.run_path(str(ROOT / "scripts" / "demo.py"))  # (main() runs as a script)
        env = demo["demo_environment"]({**base_environment(), "MAILWRIGHT_VAR_DIR": str(var)})
        self.env = {name: self._ports(value) for name, value in env.items()}
        self.env["PYTHONUNBUFFERED"] = "1"  # logs complete when a failure shows them
        demo["demo_prepare"](env=self.env)
        self.processes: dict[str, subprocess.Popen] = {}

    def _ports(self, text: str) -> str:
        return text.replace("127.0.0.1:8025", f"127.0.0.1:{self.ses_port}").replace(
            "127.0.0.1:8000", f"127.0.0.1:{self.web_port}"
        )

    def start(self) -> None:
        """Procfile.demo's processes, each command as written but for its ports and folder."""
        procfile = dict(
            line.split(":", 1) for line in (ROOT / "Procfile.demo").read_text().splitlines() if line
        )
        assert sorted(procfile) == ["beat", "ses", "web", "worker"]
        for name, line in procfile.items():
            command = self._ports(line.strip().replace("--port 8025", f"--port {self.ses_port}"))
            command = command.replace(" var/", f" {self.var}/")
            with self.log(name).open("w") as out:
                self.processes[name] = subprocess.Popen(
                    shlex.split(command), cwd=ROOT, env=self.env, stdout=out,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
        wait_for(lambda: "listening" in self.output("ses"), timeout=30, message=self.logs)
        wait_for(self._web_answers, timeout=60, message=self.logs)
        wait_for(lambda: "ready." in self.output("worker"), timeout=60, message=self.logs)

    def _web_answers(self) -> bool:
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited\n{self.logs()}"
        try:
            return request(self.web_port, "GET", "/admin/login/")[0] == 200
        except OSError:
            return False

    def log(self, name: str) -> Path:
        return self.var / f"{name}.log"

    def output(self, name: str) -> str:
        return self.log(name).read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.output(name)[-4000:]}" for name in self.processes)

    def run(self, *args: str) -> str:
        """A command in the demo's environment (after the demo's own processes' logs if it
        fails); its standard output."""
        done = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=90, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}\n{self.logs()}"
        return done.stdout

    def driver(self, *args: str) -> dict:
        return json.loads(self.run("-m", "tests.demo_driver", *args).splitlines()[-1])

    def stop(self) -> None:
        """SIGTERM to all at once (the worker's warm shutdown alone takes seconds), then
        SIGKILL to any still running 30 s later."""
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def demo(tmp_path):
    demo = Demo(tmp_path / "var")
    try:
        demo.start()
        yield demo
    finally:
        demo.stop()


def test_a_campaign_is_sent_tracked_and_reported_on_the_demo_defaults(demo, tmp_path):
    sent = demo.driver("send", str(RECIPIENTS), "60")
    assert (sent["database"], sent["broker"]) == ("sqlite", "filesystem://")
    assert sent["status"] == "sent", demo.logs()
    campaign_id = sent["campaign_id"]

    # The local endpoint publishes SES's events to the webhook (SESLOCAL_EVENTS_WEBHOOK), signed
    # with its own certificate, which only the demo's settings trust: every message ends
    # delivered, as the report counts it.
    def delivered_count() -> int:
        return demo.driver("report", str(campaign_id))["delivered"]

    wait_for(lambda: delivered_count() == RECIPIENTS, timeout=150, interval=1, message=demo.logs)

    ses = SesEndpoint(f"http://127.0.0.1:{demo.ses_port}")
    stats = ses.stats()
    assert (stats["recipients"], stats["distinct_recipients"]) == (RECIPIENTS, RECIPIENTS)
    messages = ses.messages()
    assert len(messages) == RECIPIENTS

    # A person opens one message and clicks its first link, through the demo's web process.
    base = re.escape(f"http://127.0.0.1:{demo.web_port}")
    html = messages[0]["html"]
    pixel = re.search(rf'src="{base}(/t/o/[^"]+\.gif)"', html).group(1)
    click = re.search(rf'href="{base}(/t/c/[^"]+/0)"', html).group(1)
    headers = {"User-Agent": BROWSER}
    assert request(demo.web_port, "GET", pixel, headers)[0] == 200
    status, response_headers, _ = request(demo.web_port, "GET", click, headers)
    assert (status, response_headers["Location"]) == (302, SPRING)
    # The same link in the plain-text part: tracked too, through the same link row.
    text_click = re.search(rf"{base}(/t/c/\S+/0)\s", messages[0]["text"]).group(1)
    assert text_click == click
    text_click = re.search(rf"{base}(/t/c/\S+/0)\s", messages[2]["text"]).group(1)
    status, response_headers, _ = request(demo.web_port, "GET", text_click, headers)
    assert (status, response_headers["Location"]) == (302, SPRING)

    # SES reports a delivery (again) and a hard bounce, in an event file as Firehose writes them.
    delivered, bounced = messages[0], messages[1]
    events = tmp_path / "ses-events"
    events.write_text(
        json.dumps(ses_sample("delivery", message_id=delivered["message_id"],
                              recipient=delivered["to"][0])) + "\n"
        + json.dumps(ses_sample("bounce", message_id=bounced["message_id"],
                                recipient=bounced["to"][0])) + "\n"
    )  # fmt: skip
    imported = demo.run("manage.py", "import_ses_events", str(events))
    assert "total: 1 files, 2 events, 2 recorded" in imported

    report = demo.driver("report", str(campaign_id))
    assert report["status"] == "sent"
    assert (report["recipients"], report["sent"]) == (RECIPIENTS, RECIPIENTS)
    assert report["opens"] >= 1 and report["clicks"] >= 1
    assert (report["unique_opens"], report["unique_clicks"]) == (1, 2)
    # The bounce came after the message's delivery: still counted delivered once, and bounced.
    assert (report["delivered"], report["bounced_hard"]) == (RECIPIENTS, 1)
    assert report["links"][0] == [SPRING, 2]  # one click from an HTML part, one from a text part

    # The counters every writer kept on SQLite are what a recount from the rows gives.
    recount = demo.run("manage.py", "recount_campaign", str(campaign_id))
    assert f"campaign {campaign_id}: all match" in recount, recount

    # What the demo's logs would show of a person: a search for an address (the admin sends
    # anyone not signed in to the login page with the search in `next`) and an unsubscribe page.
    header = next(h["value"] for h in delivered["headers"] if h["name"] == "List-Unsubscribe")
    unsubscribe = re.search(rf"<{base}(/t/u/[^>]+)>", header).group(1)
    assert request(demo.web_port, "GET", unsubscribe, headers)[0] == 200
    search = f"/admin/campaigns/contact/?q={delivered['to'][0]}"
    assert request(demo.web_port, "GET", search)[0] == 302
    assert_logs_hold_nothing_personal(demo, messages)

    for name in demo.processes:
        output = demo.output(name)
        assert "Traceback" not in output and "database is locked" not in output, demo.logs()


def test_an_api_message_takes_the_sqlite_path_of_message_create(demo):
    """POST /api/v1/messages to the demo's web process: message_create's portable (ORM) path,
    which PostgreSQL's single statement replaces everywhere else, on the demo's SQLite; the
    message is stored with its request, replayed for its Idempotency-Key, and sent."""
    secret = demo.driver("api_key")["secret"]
    headers = {
        "Authorization": f"Bearer {secret}",
        "Content-Type": "application/json",
        "Idempotency-Key": "demo-order-17",
    }
    body = json.dumps(
        {
            "template": "demo-receipt",
            "to": "Ada@Example.com",
            "personalisation": {"first_name": "Ada", "order": "A-17"},
            "reference": "order-17",
        }
    ).encode()
    status, _, answer = request(demo.web_port, "POST", "/api/v1/messages", headers, body)
    assert status == 202, answer
    message_id = json.loads(answer)["id"]
    # The same key and body: the first answer again, nothing made twice.
    again = request(demo.web_port, "POST", "/api/v1/messages", headers, body)
    assert (again[0], json.loads(again[2])["id"]) == (202, message_id)

    stored = demo.driver("message", str(message_id))
    assert stored["database"] == "sqlite"
    assert (stored["email"], stored["reference"]) == ("ada@example.com", "order-17")
    assert stored["personalisation"] == {"first_name": "Ada", "order": "A-17"}
    assert stored["repeat_key"] > 0  # a stream's row: one contact may get many
    assert stored["created_at"]  # the database's default, on SQLite too

    def sent() -> bool:
        return demo.driver("message", str(message_id))["status"] in ("sent", "delivered")

    wait_for(sent, timeout=60, interval=1, message=demo.logs)
    ses = SesEndpoint(f"http://127.0.0.1:{demo.ses_port}")
    [mail] = ses.messages()
    assert mail["to"] == ["ada@example.com"] and mail["subject"] == "Order A-17"
    listed = request(
        demo.web_port,
        "GET",
        "/api/v1/messages?reference=order-17",
        {"Authorization": f"Bearer {secret}"},
    )
    assert [m["id"] for m in json.loads(listed[2])["results"]] == [message_id]
    for name in demo.processes:
        assert "Traceback" not in demo.output(name), demo.logs()


def assert_logs_hold_nothing_personal(demo: Demo, messages: list[dict]) -> None:
    """The web, worker, beat and local SES logs name ids, never an address, a name, a
    tracking or unsubscribe token or a body (the demo's recipients are e2e0000@example.com …
    with first names Reader0 …; each message's tokens are in its links)."""
    secrets = {"e2e0", "Reader", "Hello Reader"}
    for message in messages:
        links = message["html"] + " ".join(h["value"] for h in message["headers"])
        secrets.update(re.findall(r"/t/[ocu]/([0-9a-z]+\.[A-Za-z0-9_-]{16})", links))
    assert len(secrets) == 3 + 2 * len(messages)  # each message's tracking and unsubscribe token
    for name in demo.processes:
        output = demo.output(name)
        assert "GET /t/" in output or name != "web", output  # the web log did record the hits
        for secret in secrets:
            assert secret not in output, f"{name}'s log holds {secret!r}"
