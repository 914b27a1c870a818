"""A template's slug (how the API names it) in the admin: optional, unique when set."""

import pytest

from templates_app.models import Template

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/templates_app/template/add/"


def add(admin_client, name: str, slug: str):
    return admin_client.post(
        ADD_URL, {"name": name, "slug": slug, "subject": "Hi", "html": "<p>Hi</p>", "text": ""}
    )


def test_templates_without_a_slug_are_many_and_keep_none(admin_client):
    assert add(admin_client, "One", "").status_code == 302
    assert add(admin_client, "Two", "").status_code == 302
    assert list(Template.objects.values_list("slug", flat=True)) == [None, None]


def test_a_slug_is_kept_and_a_second_use_of_it_is_refused_with_the_reason(admin_client):
    assert add(admin_client, "Reset", "password-reset").status_code == 302
    assert Template.objects.get().slug == "password-reset"
    again = add(admin_client, "Reset 2", "password-reset")
    assert again.status_code == 200
    assert "Template with this Slug already exists." in again.content.decode()


def test_a_slug_that_is_not_a_slug_is_refused(admin_client):
    refused = add(admin_client, "Reset", "password reset/../x")
    assert refused.status_code == 200
    assert not Template.objects.exists()
