"""The rules a template must pass to be saved, wherever it is edited: the admin's form and
the API (POST/PATCH /api/v1/templates) both validate through TemplateForm, so a template one
refuses the other refuses too, for the same reason."""

from django import forms

from templates_app.language import TemplateLimitError, TemplateSyntaxError
from templates_app.models import Template
from templates_app.services import template_errors

# The codes of a part's compile errors (the API's `code`; the admin shows the message).
TEMPLATE_SYNTAX = "template_syntax"
TEMPLATE_LIMIT = "template_limit"


class TemplateForm(forms.ModelForm):
    """The model's own rules (required, lengths, a unique name and slug, a slug's characters)
    and the template language's: each part must compile as a campaign start compiles it.

    After is_valid(), `compile_errors` holds each refused part's TemplateSyntaxError (its
    line and reason), for callers that answer with the line apart (the API)."""

    class Meta:
        model = Template
        fields = ("name", "slug", "subject", "html", "text")

    compile_errors: dict[str, TemplateSyntaxError]

    def clean_slug(self):
        # Empty is "no slug": NULL, so that any number of templates can have none.
        return self.cleaned_data.get("slug") or None

    def clean(self):
        cleaned = super().clean()
        self.compile_errors = template_errors(
            subject=cleaned.get("subject", ""),
            html=cleaned.get("html", ""),
            text=cleaned.get("text", ""),
        )
        for part, error in self.compile_errors.items():
            limit = isinstance(error, TemplateLimitError)
            what = "This is over a limit" if limit else "This does not parse"
            # The line first: the editor numbers its lines, so the user goes straight there.
            # (No params: the reason may hold a "%", which Django would try to format.)
            self.add_error(
                part,
                forms.ValidationError(
                    f"Line {error.line}: {what}: {error.reason}",
                    code=TEMPLATE_LIMIT if limit else TEMPLATE_SYNTAX,
                ),
            )
        return cleaned
