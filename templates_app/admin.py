"""Templates in the admin: refused with the line and reason when they do not parse or pass a
limit; previewed rendered for a real contact."""

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns.admin.proofs import ProofAdminMixin
from campaigns.messages import message_preview
from campaigns.models import Contact
from campaigns.services import contact_normalize_email
from templates_app.forms import TemplateForm
from templates_app.language import TemplateSyntaxError
from templates_app.models import Template


class TemplateAdminForm(TemplateForm):
    """The rules are TemplateForm's (shared with the API); this adds the editor's widgets."""

    class Meta(TemplateForm.Meta):
        # Numbered lines (static/templates_app/line_numbers.js), not wrapped: an error names
        # its line.
        widgets = {
            "html": forms.Textarea(
                attrs={"rows": 24, "class": "vLargeTextField code line-numbered", "wrap": "off"}
            ),
            "text": forms.Textarea(
                attrs={"rows": 12, "class": "vLargeTextField code line-numbered", "wrap": "off"}
            ),
        }
        help_texts = {
            "subject": 'Personalize: {{ first_name | default: "there" }} (see docs/TEMPLATES.md).',
        }

    class Media:
        js = ("templates_app/line_numbers.js",)
        css = {"all": ("templates_app/line_numbers.css",)}


@admin.register(Template)
class TemplateAdmin(ProofAdminMixin, admin.ModelAdmin):
    form = TemplateAdminForm
    list_display = ("name", "slug", "subject", "updated_at", "preview_link")
    search_fields = ("name", "slug", "subject")

    @admin.display(description="Preview")
    def preview_link(self, obj) -> str:
        url = reverse("admin:templates_app_template_preview", args=[obj.pk])
        return format_html('<a href="{}">Preview</a>', url)

    def get_urls(self):
        preview = path(
            "<int:pk>/preview/",
            self.admin_site.admin_view(self.preview_view),
            name="templates_app_template_preview",
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request, pk: int):
        """The template rendered for one contact (?contact=<id or email>; default: the first).

        Needs the view permission on the template, and on contacts to render one's data: a
        user who may not read contacts previews with empty fields (naming one is a 403)."""
        template = get_object_or_404(Template, pk=pk)
        if not self.has_view_permission(request, template):
            raise PermissionDenied
        wanted = request.GET.get("contact", "").strip()
        may_read_contacts = self.admin_site.get_model_admin(Contact).has_view_permission(request)
        if wanted and not may_read_contacts:
            raise PermissionDenied
        contact = _preview_contact(wanted) if may_read_contacts else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": template,
            "title": f"Preview of “{template}”",
            "contact": contact,
            "wanted": wanted,
            "may_read_contacts": may_read_contacts,
        }
        values = (
            # A contact's columns over its attributes of the same name, as when it is sent.
            {**contact.attributes, "email": contact.email, "first_name": contact.first_name,
             "last_name": contact.last_name}
            if contact
            else {}
        )  # fmt: skip
        try:
            context["message"] = message_preview(template=template, values=values)
        except TemplateSyntaxError as err:
            context["error"] = str(err)
        return TemplateResponse(request, "admin/templates_app/template/preview.html", context)


def _preview_contact(wanted: str) -> Contact | None:
    """The contact named by id or address (the first one when none is named), or None."""
    contacts = Contact.objects.order_by("id")
    if not wanted:
        return contacts.first()
    if wanted.isascii() and wanted.isdigit():
        return contacts.filter(pk=int(wanted)).first() if len(wanted) < 19 else None  # bigint
    try:
        return contacts.filter(email=contact_normalize_email(wanted)).first()
    except ValidationError:  # not an address a contact could have
        return None
