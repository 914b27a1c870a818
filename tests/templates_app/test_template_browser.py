"""The template form in a real browser (Debian's chromium, driven by Playwright): a template
past a limit is refused, and the marketer sees why, next to the field to fix."""

import pytest

from templates_app.language import MAX_DEPTH
from templates_app.models import Template
from tests.e2e.conftest import page  # noqa: F401 (the logged-in browser fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_too_deep_template_is_refused_with_the_reason_shown(page, live_server):  # noqa: F811
    depth = MAX_DEPTH + 1
    page.goto(f"{live_server.url}/admin/templates_app/template/add/")
    page.fill("#id_name", "Deep")
    page.fill("#id_subject", "Hello")
    page.fill("#id_html", "{% if vip %}\n" * depth + "VIP" + "{% endif %}" * depth)
    page.click("input[name=_save]")

    error = page.locator(".field-html .errorlist").inner_text()
    assert error.startswith(f"This is over a limit: line {depth}: conditions are nested more than")
    assert "{% elsif %}" in error
    assert not Template.objects.exists()
