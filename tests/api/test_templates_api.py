"""/api/v1/templates: CRUD with the admin's rules (one form, templates_app.forms.TemplateForm:
a template the admin refuses is refused here with the same reason), compile errors with the
part and line, the preview as the sender renders it, and hostile input answered 4xx."""

import datetime
import threading

import pytest
from django.db import connection
from django.utils import timezone

from campaigns.models import Campaign
from templates_app.language import MAX_BODY_BYTES, MAX_DEPTH
from templates_app.models import Template
from tests.api.helpers import api_client
from tests.factories import CampaignFactory, TemplateFactory

pytestmark = pytest.mark.django_db

ADMIN_ADD = "/admin/templates_app/template/add/"
GOOD = {"name": "Reset", "slug": "reset", "subject": "Hi", "html": "<p>Hi</p>", "text": ""}


@pytest.fixture
def client():
    return api_client(scopes=("templates:read", "templates:write"))


def admin_refusal(admin_client, fields: dict) -> dict[str, list[str]]:
    """The admin form's errors for these fields (the admin refuses: no template made)."""
    response = admin_client.post(ADMIN_ADD, {**GOOD, **fields})
    assert response.status_code == 200, "the admin accepted it"
    return {k: list(v) for k, v in response.context["adminform"].form.errors.items()}


def api_refusal(client, fields: dict) -> list[dict]:
    answer = client.post("/api/v1/templates", {**GOOD, **fields}, format="json")
    assert answer.status_code == 422, answer.content
    return answer.json()["errors"]


def test_create_read_list_update_delete(client):
    made = client.post("/api/v1/templates", GOOD, format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert {k: body[k] for k in GOOD} == {**GOOD}
    pk = body["id"]
    assert client.get(f"/api/v1/templates/{pk}").json()["subject"] == "Hi"
    listed = client.get("/api/v1/templates?slug=reset").json()
    assert [t["id"] for t in listed["results"]] == [pk] and listed["next"] is None

    changed = client.patch(f"/api/v1/templates/{pk}", {"subject": "Hello"}, format="json")
    assert changed.status_code == 200, changed.content
    template = Template.objects.get(pk=pk)
    assert (template.subject, template.html, template.slug) == ("Hello", "<p>Hi</p>", "reset")

    assert (
        client.patch(f"/api/v1/templates/{pk}", {"slug": None}, format="json").json()["slug"]
        is None
    )
    assert client.delete(f"/api/v1/templates/{pk}").status_code == 204
    assert not Template.objects.exists()
    assert client.get(f"/api/v1/templates/{pk}").status_code == 404


def test_the_list_pages_with_a_cursor(client):
    made = [TemplateFactory().pk for _ in range(5)]
    first = client.get("/api/v1/templates?limit=3").json()
    assert [t["id"] for t in first["results"]] == made[::-1][:3]
    second = client.get(first["next"]).json()
    assert [t["id"] for t in second["results"]] == made[::-1][3:] and second["next"] is None


def test_the_list_filters_by_name_change_time_and_use(client):
    old = timezone.now() - datetime.timedelta(days=2)
    reset = TemplateFactory(name="Password reset")
    receipt = TemplateFactory(name="Receipt (RESET 50%_off)")
    news = TemplateFactory(name="December news")
    CampaignFactory(template=news)
    Template.objects.filter(pk=reset.pk).update(updated_at=old)

    def ids(query: str) -> list[int]:
        answer = client.get(f"/api/v1/templates?{query}")
        assert answer.status_code == 200, answer.content
        return [t["id"] for t in answer.json()["results"]]

    assert ids("name=reset") == [receipt.pk, reset.pk]  # whatever its case
    assert ids("name=50%25_") == [receipt.pk]  # % and _ are text, not patterns
    assert ids("name=%25") == [receipt.pk]
    since = (old + datetime.timedelta(days=1)).isoformat().replace("+", "%2B")
    assert ids(f"updated_since={since}") == [news.pk, receipt.pk]
    assert ids("in_use=true") == [news.pk]
    assert ids("in_use=false") == [receipt.pk, reset.pk]
    assert ids("in_use=false&name=reset&updated_since=" + since) == [receipt.pk]
    assert ids("") == [news.pk, receipt.pk, reset.pk]  # no in_use: either
    for bad in ("in_use=maybe", "updated_since=yesterday", "name=" + "x" * 201, "name=a%00b"):
        answer = client.get(f"/api/v1/templates?{bad}")
        assert answer.status_code == 400, (bad, answer.content)
        assert answer.json()["errors"][0]["field"] == bad.split("=")[0]


@pytest.mark.parametrize(
    "fields",
    [
        {"html": "<p>a</p>\n<p>b</p>\n{% if vip %}\n"},  # never closed, line 3
        {"subject": "Hi\r\nBcc: x@evil.example"},  # a header injection
        {"text": "x" * (MAX_BODY_BYTES + 1)},  # over a limit
        {"html": "{% if vip %}\n" * (MAX_DEPTH + 1) + "x" + "{% endif %}" * (MAX_DEPTH + 1)},
        {"subject": "{{ first_name"},
        {"name": ""},
        {"name": "x" * 201},
        {"slug": "password reset/../x"},
        {"html": "   "},
    ],
)
def test_what_the_admin_refuses_the_api_refuses_for_the_same_reason(client, admin_client, fields):
    admin = admin_refusal(admin_client, fields)
    api = api_refusal(client, fields)
    assert {e["field"]: [e["message"]] for e in api} == {
        field: messages for field, messages in admin.items()
    }
    assert not Template.objects.exists()


def test_a_compile_error_names_its_part_and_line(client):
    errors = api_refusal(client, {"text": "ok\n\nHi {{ first_name", "html": "<p>x</p>"})
    assert errors == [
        {
            "code": "template_syntax",
            "field": "text",
            "line": 3,
            "message": errors[0]["message"],
        }
    ]
    assert errors[0]["message"].startswith("Line 3: This does not parse: ")
    limit = api_refusal(client, {"text": "x" * (MAX_BODY_BYTES + 1)})
    assert (limit[0]["code"], limit[0]["field"], limit[0]["line"]) == ("template_limit", "text", 1)


def test_a_name_or_slug_taken_is_refused_as_the_admin_refuses_it(client, admin_client):
    TemplateFactory(name="Reset", slug="other")
    TemplateFactory(name="Other", slug="reset")
    admin = admin_refusal(admin_client, {})
    api = api_refusal(client, {})
    assert {(e["code"], e["field"]) for e in api} == {("unique", "name"), ("unique", "slug")}
    assert {e["field"]: [e["message"]] for e in api} == admin


def test_an_update_is_checked_whole_and_a_refused_one_changes_nothing(client):
    template = TemplateFactory(subject="Hi", html="<p>ok</p>")
    refused = client.patch(
        f"/api/v1/templates/{template.pk}", {"html": "{% if a %}", "subject": "New"}, format="json"
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "html"
    template.refresh_from_db()
    assert (template.subject, template.html) == ("Hi", "<p>ok</p>")


def test_a_template_in_use_is_not_deleted(client):
    campaign = CampaignFactory()
    answer = client.delete(f"/api/v1/templates/{campaign.template_id}")
    assert answer.status_code == 409
    assert answer.json()["errors"][0]["code"] == "template_in_use"
    assert Campaign.objects.filter(pk=campaign.pk).exists()
    assert Template.objects.filter(pk=campaign.template_id).exists()


def test_the_admin_refuses_deleting_a_template_in_use_too(admin_client):
    campaign = CampaignFactory()
    page = admin_client.post(
        f"/admin/templates_app/template/{campaign.template_id}/delete/", {"post": "yes"}
    )
    assert Template.objects.filter(pk=campaign.template_id).exists()
    assert "protected" in page.content.decode().lower()


def test_the_preview_renders_as_the_sender_does(client):
    template = TemplateFactory(
        subject='Hi {{ first_name | default: "there" }}',
        html="<p>{{ first_name }} {{ note }}</p>{% if vip %}<b>VIP</b>{% endif %}"
        '<a href="{{ unsubscribe_url }}">Leave</a>',
        text="{{ count }} items, {{ missing }}.",
    )
    answer = client.post(
        f"/api/v1/templates/{template.pk}/preview",
        {
            "personalisation": {
                "first_name": "Ada\r\nBcc: x@evil.example",
                "note": "<script>alert(1)</script>",
                "vip": True,
                "count": 3.0,
            }
        },
        format="json",
    )
    assert answer.status_code == 200, answer.content
    # A value's line breaks become spaces (merge_value), HTML is escaped in the HTML body,
    # true is "true", 3.0 is "3", a field without a value is empty.
    assert answer.json() == {
        "subject": "Hi Ada  Bcc: x@evil.example",
        "html": "<p>Ada  Bcc: x@evil.example &lt;script&gt;alert(1)&lt;/script&gt;</p><b>VIP</b>"
        '<a href="#unsubscribe-link-of-the-recipient">Leave</a>',
        "text": "3 items, .",
    }
    fallback = client.post(f"/api/v1/templates/{template.pk}/preview", {}, format="json")
    assert fallback.json()["subject"] == "Hi there"


def test_a_stored_template_that_no_longer_compiles_previews_as_a_422_with_its_line(client):
    template = TemplateFactory(html="<p>ok</p>\n{% if vip %}")  # saved around the rules
    answer = client.post(f"/api/v1/templates/{template.pk}/preview", {}, format="json")
    assert answer.status_code == 422
    error = answer.json()["errors"][0]
    assert (error["code"], error["field"], error["line"]) == ("template_invalid", "html", 2)


def test_scopes(client):
    reader = api_client(scopes=("templates:read",))
    template = TemplateFactory()
    assert reader.get(f"/api/v1/templates/{template.pk}").status_code == 200
    assert (
        reader.post(f"/api/v1/templates/{template.pk}/preview", {}, format="json").status_code
        == 200
    )
    for answer in (
        reader.post("/api/v1/templates", GOOD, format="json"),
        reader.patch(f"/api/v1/templates/{template.pk}", {"name": "x"}, format="json"),
        reader.delete(f"/api/v1/templates/{template.pk}"),
    ):
        assert answer.status_code == 403
        assert answer.json()["errors"][0]["code"] == "missing_scope"
    other = api_client(scopes=("messages:send",))
    assert other.get("/api/v1/templates").status_code == 403
    assert client.put(f"/api/v1/templates/{template.pk}", GOOD, format="json").status_code == 405


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/templates", {**GOOD, "name": "a\x00b"}),
        ("post", "/api/v1/templates", {**GOOD, "html": ["<p>"]}),
        ("post", "/api/v1/templates", {**GOOD, "subject": {"a": 1}}),
        ("post", "/api/v1/templates", {**GOOD, "name": 10**30}),
        ("post", "/api/v1/templates", {**GOOD, "extra": 1}),
        ("post", "/api/v1/templates", [GOOD]),
        ("post", "/api/v1/templates", None),
        ("patch", "/api/v1/templates/{pk}", {"slug": 5}),
        ("patch", "/api/v1/templates/99999999999999999999999", {"name": "x"}),
        ("get", "/api/v1/templates?limit=0", None),
        ("get", "/api/v1/templates?cursor=zzz", None),
        ("get", "/api/v1/templates?slug=a%00b", None),
        ("get", "/api/v1/templates/9223372036854775808", None),
        ("post", "/api/v1/templates/{pk}/preview", {"personalisation": {"a": {"b": 1}}}),
        ("post", "/api/v1/templates/{pk}/preview", {"personalisation": "x"}),
        ("post", "/api/v1/templates/{pk}/preview", {"personalisation": {"a": "\x00"}}),
        ("post", "/api/v1/templates/{pk}/preview", {"data": {}}),
        ("delete", "/api/v1/templates/0", None),
    ],
)
def test_hostile_input_is_a_4xx_in_the_error_shape(client, method, path, body):
    template = TemplateFactory(name="Kept")
    path = path.format(pk=template.pk)
    kwargs = {"format": "json"} if body is not None else {}
    answer = (
        getattr(client, method)(path, body, **kwargs)
        if body is not None
        else getattr(client, method)(path)
    )
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.content)
    errors = answer.json()["errors"]
    assert errors and all(set(e) >= {"code", "field", "message"} for e in errors)
    assert Template.objects.count() == 1


def test_a_lone_surrogate_is_400(client):
    answer = client.post(
        "/api/v1/templates",
        '{"name": "a\\ud800", "subject": "x", "html": "x"}',
        content_type="application/json",
    )
    assert answer.status_code == 400, answer.content
    assert answer.json()["errors"][0]["code"] == "surrogate_characters_not_allowed"


def test_deep_nesting_and_bad_json_are_400(client):
    deep = client.post(
        "/api/v1/templates", "[" * 100_000 + "]" * 100_000, content_type="application/json"
    )
    assert deep.status_code == 400
    broken = client.post("/api/v1/templates", '{"name": ', content_type="application/json")
    assert broken.status_code == 400 and broken.json()["errors"][0]["code"] == "invalid_json"


def test_a_body_over_the_limit_is_413_before_it_is_read(client):
    answer = client.post(
        "/api/v1/templates",
        '{"html": "' + "x" * (3 * 1024 * 1024) + '"}',
        content_type="application/json",
    )
    assert answer.status_code == 413


def test_an_idempotent_create_makes_one_template(client):
    first = client.post("/api/v1/templates", GOOD, format="json", HTTP_IDEMPOTENCY_KEY="t-1")
    again = client.post("/api/v1/templates", GOOD, format="json", HTTP_IDEMPOTENCY_KEY="t-1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and Template.objects.count() == 1


def test_the_preview_is_sandboxed(client, settings):
    template = TemplateFactory(
        subject="{{ SECRET_KEY }}", html="<p>{{ settings }}{{ request }}{{ secret_key }}</p>"
    )
    answer = client.post(
        f"/api/v1/templates/{template.pk}/preview",
        {"personalisation": {"request": "<b>given</b>"}},
        format="json",
    )
    assert answer.status_code == 200
    body = answer.content.decode()
    assert settings.SECRET_KEY not in body
    assert answer.json()["html"] == "<p>&lt;b&gt;given&lt;/b&gt;</p>"


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_of_one_name_make_one_template_and_no_500():
    """Both requests pass the form's uniqueness check before either commits: the database's
    constraint decides, and the loser is a 4xx."""
    clients = [api_client(scopes=("templates:write",)) for _ in range(4)]
    answers: list[int] = []
    barrier = threading.Barrier(len(clients))

    def create(one):
        try:
            barrier.wait()
            answers.append(one.post("/api/v1/templates", GOOD, format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(one,)) for one in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers)[0] == 201 and answers.count(201) == 1, answers
    assert all(code in (409, 422) for code in answers if code != 201), answers
    assert Template.objects.count() == 1
