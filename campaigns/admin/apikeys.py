"""API keys in the admin: made with a form that shows the whole key once, on the page that
answers it (never stored, never logged, never put in a message or the session), listed by
their visible prefix, and revoked after a confirmation. A key's secret and scopes cannot be
changed; only its name can. Keys are never deleted: revoked, they keep the history of what
was sent with them. The ApiKey model permissions decide who may do what (superusers all)."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from campaigns.apikeys import SCOPES, api_key_create, api_key_revoke
from campaigns.models import ApiKey


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What uses it, e.g. “the shop's receipts”: to tell keys apart later.",
    )
    scopes = forms.MultipleChoiceField(
        choices=[(scope, f"{scope}: {description}") for scope, description in SCOPES.items()],
        widget=forms.CheckboxSelectMultiple,
        help_text="Grant only what the integration needs.",
    )
    test = forms.BooleanField(
        label="Test key",
        required=False,
        help_text="A test key's messages go through every step but never reach SES: for "
        "development and CI.",
    )
    expires_at = forms.SplitDateTimeField(
        label="Expires",
        required=False,
        widget=AdminSplitDateTime,
        help_text="Empty: the key works until it is revoked.",
    )

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("Choose a time in the future.")
        return expires_at


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name", "prefix", "mode", "scopes_shown", "created", "expires", "last_used", "revoked",
    )  # fmt: skip
    list_display_links = ("name", "prefix")
    search_fields = ("name", "prefix")
    fields = (
        "name", "prefix", "mode", "scopes_shown", "created_by", "created_at", "expires_at",
        "last_used_at", "revoked_at",
    )  # fmt: skip
    readonly_fields = fields[1:]
    actions = ["revoke_selected"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoked instead (module docstring)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by")

    @admin.display(description="Mode", ordering="test")
    def mode(self, obj: ApiKey) -> str:
        return "test" if obj.test else "live"

    @admin.display(description="Scopes")
    def scopes_shown(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes) or "none"

    # The list's dates, short enough for its eight columns to fit beside the menu.
    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: ApiKey) -> str:
        return _when(obj.created_at)

    @admin.display(description="Expires", ordering="expires_at")
    def expires(self, obj: ApiKey) -> str:
        return _when(obj.expires_at, "never")

    @admin.display(description="Last used", ordering="last_used_at")
    def last_used(self, obj: ApiKey) -> str:
        return _when(obj.last_used_at, "never")

    @admin.display(description="Revoked", ordering="revoked_at")
    def revoked(self, obj: ApiKey) -> str:
        return _when(obj.revoked_at, "no")

    # -- making a key ---------------------------------------------------------------------

    def add_view(self, request: HttpRequest, form_url="", extra_context=None):
        """The form, then the new key on the page that answers the POST: the only time its
        secret is seen. The admin's views are never cached (Cache-Control: no-store), so
        going back does not show it again either."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiKeyCreateForm(request.POST if request.method == "POST" else None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "media": self.media + form.media,
        }
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            issued = api_key_create(
                name=data["name"],
                scopes=data["scopes"],
                test=data["test"],
                expires_at=data["expires_at"],
                created_by=request.user,
            )
            self.log_addition(request, issued.key, [{"added": {}}])  # (the prefix, no secret)
            context.update(title="Your new API key", key=issued.key, secret=issued.secret)
            return TemplateResponse(request, "admin/campaigns/apikey/created.html", context)
        context.update(title="Add API key", form=form)
        return TemplateResponse(request, "admin/campaigns/apikey/add.html", context)

    # -- revoking -------------------------------------------------------------------------

    def get_urls(self):
        revoke = path(
            "<int:pk>/revoke/",
            self.admin_site.admin_view(self.revoke_view),
            name="campaigns_apikey_revoke",
        )
        return [revoke, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        key = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if key is not None and key.revoked_at is None and self.has_change_permission(request, key):
            extra_context["revoke_url"] = reverse("admin:campaigns_apikey_revoke", args=[key.pk])
        return super().change_view(request, object_id, form_url, extra_context)

    def revoke_view(self, request: HttpRequest, pk: int):
        key = get_object_or_404(ApiKey, pk=pk)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        if request.method == "POST":
            self._revoke(request, [key])
            return HttpResponseRedirect(reverse("admin:campaigns_apikey_change", args=[key.pk]))
        return self._confirmation(request, [key], action=None)

    @admin.action(description="Revoke selected API keys…", permissions=["change"])
    def revoke_selected(self, request, queryset):
        keys = list(queryset)
        if "apply" in request.POST:
            self._revoke(request, keys)
            return None
        return self._confirmation(request, keys, action="revoke_selected")

    def _revoke(self, request, keys: list[ApiKey]) -> None:
        revoked = [key for key in keys if api_key_revoke(key=key)]
        for key in revoked:
            self.log_change(request, key, "Revoked.")
        if revoked:
            self.message_user(
                request,
                f"Revoked {', '.join(key.prefix for key in revoked)}: requests made with "
                f"{'it' if len(revoked) == 1 else 'them'} are refused from now on (on every "
                f"web server within {settings.API_KEY_CACHE_SECONDS} s).",
                messages.SUCCESS,
            )
        if len(revoked) < len(keys):
            self.message_user(
                request, f"{len(keys) - len(revoked)} already revoked.", messages.WARNING
            )

    def _confirmation(self, request, keys: list[ApiKey], *, action: str | None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Revoke API key" if len(keys) == 1 else "Revoke API keys",
            "keys": keys,
            "action": action,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "select_across": request.POST.get("select_across", "0"),
        }
        return TemplateResponse(request, "admin/campaigns/apikey/revoke.html", context)


def _when(moment, empty: str = "") -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M") if moment else empty
