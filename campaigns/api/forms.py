"""The admin's forms as the API's validators: a resource's rules live in one Django form
(templates_app.forms.TemplateForm, campaigns.forms.CampaignForm) that the admin and the API
both run, and here its errors become the one error shape (422, the form's own codes)."""

from django import forms

from campaigns.problems import problem


def form_errors(form: forms.BaseForm, *, fields: dict[str, str] | None = None) -> list[dict]:
    """Each of an invalid form's errors in the API's shape: `field` is the request's name for
    the form's field (`fields` renames: {"contact_list": "list"}), "" for the whole form;
    `code` the form's (Django's `required`, `max_length`, `unique`, `invalid_choice`, or the
    rule's own); the message as the admin shows it."""
    renamed = fields or {}
    found = []
    for name, errors in form.errors.as_data().items():
        field = "" if name == forms.forms.NON_FIELD_ERRORS else renamed.get(name, name)
        for err in errors:
            for message in err.messages:
                found.append(problem(err.code or "invalid", message, field))
    return found
