"""The web server as the image runs it: granian with config.wsgi, its GRANIAN_* settings from
the Dockerfile, on the test database. What the other tests reach through Django's test client
is checked here over real HTTP: the tracking fast routes, the admin, the collected static
files, and that nothing the server prints carries a token or an address."""

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message

import pytest

from campaigns.models import Notification
from campaigns.tokens import token_for
from tests.conftest import ROOT, _free_port, _test_database_url, stop_process, wait_for
from tests.factories import CampaignLinkFactory, NotificationFactory
from tracking.models import Event

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"


def _image_environment() -> dict[str, str]:
    """The Dockerfile's GRANIAN_* variables (one ENV instruction, continued lines)."""
    text = (ROOT / "Dockerfile").read_text()
    return dict(re.findall(r"\b(GRANIAN_[A-Z_]+)=(\S+)", text))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _get(url: str, **headers) -> tuple[int, Message, bytes]:
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers={"User-Agent": BROWSER, **headers})  # noqa: S310
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


@pytest.fixture
def web_server(tmp_path):
    static_root = tmp_path / "staticfiles"
    env = {
        **os.environ,
        **_image_environment(),
        "GRANIAN_HOST": "127.0.0.1",
        "GRANIAN_PORT": str(_free_port()),
        "GRANIAN_WORKERS": "1",
        "GRANIAN_STATIC_PATH_MOUNT": str(static_root),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DJANGO_STATIC_ROOT": str(static_root),
        "DATABASE_URL": _test_database_url(),
        "TRACKING_BUFFER": "false",  # recorded in the request: the test reads it at once
        "LOG_LEVEL": "INFO",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    log = tmp_path / "web.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "granian", "config.wsgi:application"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{env['GRANIAN_PORT']}"

    def answering():
        assert process.poll() is None, log.read_text()
        try:
            return _get(f"{url}/t/o/x.gif")[0] == 200
        except OSError:
            return False

    wait_for(answering, timeout=60, message=f"granian did not start:\n{log.read_text()}")
    yield url, log
    stop_process(process)


def test_the_image_serves_tracking_admin_and_static_files(web_server):
    url, log = web_server
    link = CampaignLinkFactory(index=0, url="https://example.com/a?b=1")
    row = NotificationFactory(campaign=link.campaign, sent=True, message_id="m-web")
    contact = row.contact
    Notification.objects.filter(pk=row.pk).update(updated_at=row.updated_at.replace(year=2020))
    token = token_for(row.pk)

    status, headers, body = _get(f"{url}/t/o/{token}.gif")
    assert (status, headers["Content-Type"], body[:6]) == (200, "image/gif", b"GIF89a")
    assert "no-store" in headers["Cache-Control"]
    status, headers, _ = _get(f"{url}/t/c/{token}/0")
    assert (status, headers["Location"]) == (302, "https://example.com/a?b=1")
    assert _get(f"{url}/t/c/{token}/7")[0] == 404  # no such link: nothing to redirect to
    assert _get(f"{url}/t/o/not-a-token.gif")[0] == 200  # still the pixel, recorded nowhere

    events = Event.objects.filter(notification=row).order_by("id")
    assert [(e.type, e.ip) for e in events] == [("opened", "127.0.0.1"), ("clicked", "127.0.0.1")]
    assert Event.objects.count() == 2

    status, _, body = _get(f"{url}/admin/login/")
    assert status == 200 and b"csrfmiddlewaretoken" in body
    css = re.search(rb'href="(/static/admin/css/[^"]+\.css)"', body).group(1).decode()
    status, headers, body = _get(url + css)
    assert status == 200 and headers["Content-Type"].startswith("text/css") and body
    chart = next((ROOT / "static" / "vendor" / "chartjs").glob("*.js")).name
    assert _get(f"{url}/static/vendor/chartjs/{chart}")[0] == 200  # the report's chart

    time.sleep(0.5)  # what the server prints reaches the log file
    output = log.read_text()
    assert token not in output and contact.email not in output


def test_the_image_serves_the_api_docs_with_their_collected_scripts(web_server):
    """Swagger UI and Redoc as the image serves them: their scripts and styles are the
    sidecar's files that collectstatic gathered, served by granian itself, not a CDN's."""
    url, _ = web_server
    for page in ("/api/docs/", "/api/redoc/"):
        status, headers, body = _get(url + page)
        assert status == 200 and headers["Content-Type"].startswith("text/html"), page
        sources = re.findall(rb'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"', body)
        assert any(source.endswith(b".js") for source in sources), page
        for source in sources:
            assert source.startswith(b"/static/drf_spectacular_sidecar/"), source
            status, headers, asset = _get(url + source.decode())
            assert status == 200 and asset, source
            kind = (
                "javascript"
                if source.endswith(b".js")
                else "css"
                if source.endswith(b".css")
                else "image"
            )
            assert kind in headers["Content-Type"], (source, headers["Content-Type"])
    status, headers, body = _get(f"{url}/api/schema/?format=json")
    assert status == 200 and b'"/api/v1/messages"' in body
