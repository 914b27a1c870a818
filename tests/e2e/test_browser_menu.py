"""The admin's home and menu in a real browser (Debian's chromium): a marketer lands on the
dashboard with no plumbing in the menu; a superuser finds the plumbing in its own section;
the template editor numbers its lines, in step with the text as it scrolls."""

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections

from campaigns.counters import CounterName, counters_add
from campaigns.quota import ses_send_quota_forget
from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.factories import CampaignFactory, ContactFactory, ContactListFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MARKETER_PERMS = ["view_campaign", "change_campaign", "view_contact", "view_contactlist",
                  "view_template", "change_template", "add_template"]  # fmt: skip


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        connections.close_all()  # (inside Playwright's context: see tests/conftest.py)
        browser.close()


def _signed_in(browser, live_server, username: str):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    return page


@pytest.fixture
def marketer():
    user = User.objects.create_user(username="marketer", password="password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=MARKETER_PERMS))
    return user


def test_a_marketer_lands_on_the_dashboard_without_plumbing(browser, live_server, marketer, ses):
    ses_send_quota_forget()  # read afresh from the local SES endpoint
    readers = ContactListFactory(name="Readers")
    readers.contacts.add(ContactFactory(), ContactFactory())
    campaign = CampaignFactory(name="May news", status="sent", recipient_count=4)
    counters_add(campaign_id=campaign.pk, deltas={CounterName.SENT: 4, CounterName.UNIQUE_OPENS: 1})

    page = _signed_in(browser, live_server, "marketer")
    dashboard = page.locator("#dashboard")
    assert "May news" in dashboard.inner_text() and "25.0 %" in dashboard.inner_text()
    readers_row = page.locator("#dashboard .dashboard-lists tr", has_text="Readers")
    assert readers_row.locator("td").inner_text() == "2"
    assert "per second" in page.locator("#send-quota").inner_text()  # read from the local SES
    content = page.locator("#content-main").text_content()
    assert "Campaigns and audiences" in content  # Django's list of pages, below
    for plumbing in ["System (operators)", "Periodic tasks", "SES events waiting", "Crontabs"]:
        assert plumbing.lower() not in page.content().lower()


def test_a_superuser_finds_the_plumbing_in_its_own_section_last(browser, live_server, admin_user):
    page = _signed_in(browser, live_server, "admin")
    sections = [  # (as written: the admin's CSS shows captions in capitals)
        text.strip()
        for text in page.locator("#content-main .module caption a.section").all_text_contents()
    ]
    assert sections[-1] == "System (operators)"
    system = page.locator("#content-main .app-system").text_content()
    assert "Periodic tasks" in system and "SES events waiting for their message" in system
    assert "Message events" in system


def test_the_template_editor_numbers_its_lines(browser, live_server, marketer):
    page = _signed_in(browser, live_server, "marketer")
    page.goto(f"{live_server.url}/admin/templates_app/template/add/")
    gutter = page.locator(".field-html .line-numbers")
    assert gutter.inner_text().split() == ["1"]
    page.fill("#id_html", "\n".join(f"<p>line {n}</p>" for n in range(1, 81)))
    assert gutter.inner_text().split()[-1] == "80"
    # Scrolled to the end, the gutter shows the same lines as the text beside it.
    page.locator("#id_html").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    # (Filling already scrolled the text area to its caret: wait for the gutter to follow
    # the last scroll, to the end, not the first.)
    page.wait_for_function(
        "() => { const text = document.querySelector('#id_html');"
        " const gutter = document.querySelector('.field-html .line-numbers');"
        " return gutter.scrollTop >= text.scrollHeight - text.clientHeight - 1; }",
        timeout=5000,
    )
    offsets = page.evaluate(
        "() => [document.querySelector('#id_html').scrollTop,"
        " document.querySelector('.field-html .line-numbers').scrollTop]"
    )
    assert offsets[0] > 0 and abs(offsets[0] - offsets[1]) <= 1, offsets
    # An error names the line the gutter shows.
    page.fill("#id_name", "Numbered")
    page.fill("#id_subject", "Hello")
    page.fill("#id_html", "<p>one</p>\n<p>two</p>\n{% if vip %}\n")
    page.click("input[name=_save]")
    assert page.locator(".field-html .errorlist").inner_text().startswith("Line 3: ")
    assert page.locator(".field-html .line-numbers").inner_text().split()[:4] == [
        "1", "2", "3", "4"
    ]  # fmt: skip
