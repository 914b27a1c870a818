"""The admin site: a dashboard for marketers on its home page, and the plumbing (beat's
schedules, SES events waiting for their message, the raw event table) apart, in a "System
(operators)" section at the end of the menu that only superusers see."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.urls import reverse

# (app label, model name or None for every model of the app): operators' tables.
SYSTEM_MODELS = (
    ("django_celery_beat", None),
    ("tracking", "event"),
    ("tracking", "pendingespevent"),
)
SYSTEM_SECTION = "System (operators)"
SYSTEM_LABEL = "system"


def _is_system(app_label: str, model_name: str) -> bool:
    return any(app_label == label and model in (None, model_name) for label, model in SYSTEM_MODELS)


class MailwrightAdminSite(admin.AdminSite):
    site_header = "Mailwright"
    site_title = "Mailwright"
    index_title = "Email marketing"
    index_template = "admin/mailwright_index.html"

    def get_app_list(self, request, app_label=None):
        """Django's list without the operators' tables, which follow, for a superuser, in
        one section of their own, last (an app's own page keeps Django's list)."""
        app_list = super().get_app_list(request, app_label)
        if app_label is not None:
            return app_list
        marketing, system = [], []
        for app in app_list:
            kept = []
            for model in app["models"]:
                meta = model["model"]._meta
                (system if _is_system(meta.app_label, meta.model_name) else kept).append(model)
            if kept:
                marketing.append({**app, "models": kept})
        if system and request.user.is_superuser:
            system.sort(key=lambda model: model["name"])
            marketing.append(
                {
                    "name": SYSTEM_SECTION,
                    "app_label": SYSTEM_LABEL,
                    "app_url": reverse("admin:index", current_app=self.name) + "#system",
                    "has_module_perms": True,
                    "models": system,
                }
            )
        return marketing

    def index(self, request, extra_context=None):
        # (Imported here: the site is built before the apps' admin modules are loaded.)
        from campaigns.admin.dashboard import dashboard_context

        context = dashboard_context(request=request, site=self)
        return super().index(request, {**context, **(extra_context or {})})


class MailwrightAdminConfig(AdminConfig):
    default_site = "config.admin_site.MailwrightAdminSite"
