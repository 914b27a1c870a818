"""The template editor numbers its lines (static/templates_app/line_numbers.js) and its
errors name the line, first, so the user finds it beside the text."""

import pytest

pytestmark = pytest.mark.django_db


def test_the_editor_loads_its_line_numbers_on_both_bodies(admin_client):
    page = admin_client.get("/admin/templates_app/template/add/").content.decode()
    assert "/static/templates_app/line_numbers.js" in page
    assert "/static/templates_app/line_numbers.css" in page
    for field in ("html", "text"):
        tag = page[page.index(f'id="id_{field}"') - 200 : page.index(f'id="id_{field}"')]
        assert "line-numbered" in tag and 'wrap="off"' in tag, tag


def test_an_error_names_its_line_first(admin_client):
    response = admin_client.post(
        "/admin/templates_app/template/add/",
        {"name": "T", "subject": "Hi", "html": "<p>a</p>\n<p>b</p>\n{% if vip %}\n", "text": ""},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["html"]
    assert errors[0].startswith("Line 3: This does not parse: "), errors
