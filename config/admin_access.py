"""Admin pages only superusers open, whatever model permissions a staff user holds: beat's
schedules (a periodic task can run any task, with any arguments) and the raw event tables
(provider payloads, addresses included)."""

from django.apps import apps
from django.contrib import admin


class SuperuserOnlyAdmin:
    """ModelAdmin mixin: each permission needs a superuser on top of what the admin allows."""

    def has_module_permission(self, request) -> bool:
        return request.user.is_superuser and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser and super().has_view_permission(request, obj)

    def has_add_permission(self, request, *args) -> bool:
        return request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)


def admin_superuser_only(site: admin.AdminSite, app_label: str) -> None:
    """Register every model of `app_label` the site has again, its admin behind
    SuperuserOnlyAdmin (for an app whose admin module is not ours, such as beat's)."""
    for model in apps.get_app_config(app_label).get_models():
        if not site.is_registered(model):
            continue
        model_admin = type(site.get_model_admin(model))
        if issubclass(model_admin, SuperuserOnlyAdmin):
            continue  # already (urls imported again)
        site.unregister(model)
        site.register(model, type(model_admin.__name__, (SuperuserOnlyAdmin, model_admin), {}))
