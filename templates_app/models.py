from django.db import models


class Template(models.Model):
    """An email template in the sandboxed language (docs/TEMPLATES.md): subject, HTML and text.

    The parts are checked on save through the admin form (templates_app.services.template_errors:
    the syntax, and the size limits of docs/TEMPLATES.md); a campaign compiles its own frozen copy
    when it starts (and refuses it for the same reasons), so editing a template never changes
    what a running campaign sends.
    """

    name = models.CharField(max_length=200, unique=True)
    # How the API names it (POST /api/v1/messages {"template": "password-reset"}): stable
    # while the name is reworded. Optional; unique when set.
    slug = models.SlugField(
        max_length=100,
        unique=True,
        null=True,
        blank=True,
        help_text="How the API refers to it, e.g. password-reset. Leave empty if unused.",
    )
    subject = models.CharField(max_length=998)  # RFC 5322's line limit
    html = models.TextField("HTML body")
    text = models.TextField("Text body", blank=True, help_text="Leave empty to send HTML only.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
