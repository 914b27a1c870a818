"""Callback endpoints in the admin (docs/API.md#callbacks-webhooks-to-integrators): made with
a form that shows the secret once, on the page that answers it (stored, since signing needs it,
but never shown again, logged or put in a message); its secret rotated and the endpoint
enabled again after confirmations (POST, CSRF); a delivery log per endpoint with "Retry now".
The checks and writes are tracking.callbacks' (the API calls the same ones). The
CallbackEndpoint model permissions decide who may do what (superusers all)."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from tracking import callbacks
from tracking.models import CallbackDelivery, CallbackEndpoint

LOG_PAGE = 100
EVENT_TYPE_CHOICES = [(t, t) for t in callbacks.EVENT_TYPES]


class EndpointForm(forms.ModelForm):
    url = forms.URLField(
        label="URL",
        max_length=2000,
        assume_scheme="https",
        help_text="https://… on a public address (private and loopback addresses are refused).",
    )
    event_types = forms.MultipleChoiceField(
        choices=EVENT_TYPE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="What the endpoint hears about (payloads: docs/API.md).",
    )

    class Meta:
        model = CallbackEndpoint
        fields = ["url", "description", "event_types"]

    def clean_url(self):
        try:
            return callbacks.callback_url_check(self.cleaned_data["url"])
        except callbacks.TargetRefused as refused:
            raise forms.ValidationError(str(refused)) from None

    def clean_event_types(self):
        try:
            return callbacks.event_types_check(self.cleaned_data["event_types"])
        except ValueError as err:
            raise forms.ValidationError(str(err)) from None


@admin.register(CallbackEndpoint)
class CallbackEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ("__str__", "url", "types", "state", "failing", "created_at")
    list_filter = ("enabled",)
    search_fields = ("url", "description")
    readonly_fields = (
        "enabled", "disabled_at", "disabled_reason", "failing_since", "previous_secret_expires_at",
        "created_by", "created_at",
    )  # fmt: skip

    def get_fields(self, request, obj=None):
        return ["url", "description", "event_types", *(self.readonly_fields if obj else ())]

    @admin.display(description="Event types")
    def types(self, obj) -> str:
        return ", ".join(obj.event_types)

    @admin.display(description="State", ordering="enabled")
    def state(self, obj) -> str:
        return "enabled" if obj.enabled else f"disabled: {obj.disabled_reason}"

    @admin.display(description="Failing since", ordering="failing_since")
    def failing(self, obj) -> str:
        return _when(obj.failing_since, "—")

    # -- making one: the secret shown once -------------------------------------------------

    def add_view(self, request: HttpRequest, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = EndpointForm(request.POST if request.method == "POST" else None)
        context = self._context(request)
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            endpoint = callbacks.endpoint_create(
                url=data["url"],
                event_types=data["event_types"],
                description=data["description"],
                user=request.user,
            )
            self.log_addition(request, endpoint, [{"added": {}}])
            context.update(
                title="Your new callback endpoint", endpoint=endpoint, secret=endpoint.secret
            )
            return TemplateResponse(request, "admin/tracking/callbackendpoint/secret.html", context)
        context.update(title="Add callback endpoint", form=form, media=self.media + form.media)
        return TemplateResponse(request, "admin/tracking/callbackendpoint/add.html", context)

    def save_model(self, request, obj, form, change):
        if not change:  # (add_view makes them; kept for completeness)
            return super().save_model(request, obj, form, change)
        callbacks.endpoint_update(
            obj,
            url=form.cleaned_data["url"],
            event_types=form.cleaned_data["event_types"],
            description=form.cleaned_data["description"],
        )
        return None

    # -- rotate, enable, the delivery log --------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/rotate/", view(self.rotate_view), name="tracking_callbackendpoint_rotate"
            ),
            path(
                "<int:pk>/enable/", view(self.enable_view), name="tracking_callbackendpoint_enable"
            ),
            path(
                "<int:pk>/deliveries/",
                view(self.deliveries_view),
                name="tracking_callbackendpoint_deliveries",
            ),
            path(
                "<int:pk>/deliveries/<int:delivery_pk>/retry/",
                view(self.retry_view),
                name="tracking_callbackendpoint_retry",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        endpoint = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if endpoint is not None:
            extra_context["deliveries_url"] = reverse(
                "admin:tracking_callbackendpoint_deliveries", args=[endpoint.pk]
            )
            if self.has_change_permission(request, endpoint):
                extra_context["rotate_url"] = reverse(
                    "admin:tracking_callbackendpoint_rotate", args=[endpoint.pk]
                )
                if not endpoint.enabled:
                    extra_context["enable_url"] = reverse(
                        "admin:tracking_callbackendpoint_enable", args=[endpoint.pk]
                    )
        return super().change_view(request, object_id, form_url, extra_context)

    def _endpoint(self, request, pk: int, *, change: bool) -> CallbackEndpoint:
        endpoint = get_object_or_404(CallbackEndpoint, pk=pk)
        allowed = (
            self.has_change_permission(request, endpoint)
            if change
            else self.has_view_permission(request, endpoint)
        )
        if not allowed:
            raise PermissionDenied
        return endpoint

    def rotate_view(self, request: HttpRequest, pk: int):
        endpoint = self._endpoint(request, pk, change=True)
        context = self._context(request, endpoint=endpoint)
        if request.method == "POST":
            secret = callbacks.endpoint_rotate_secret(endpoint)
            self.log_change(request, endpoint, "Secret rotated.")
            context.update(title="The endpoint's new secret", secret=secret, rotated=True)
            return TemplateResponse(request, "admin/tracking/callbackendpoint/secret.html", context)
        context.update(
            title="Rotate the secret",
            question=(
                "A new secret is made and shown once. The old one keeps signing too for "
                f"{settings.CALLBACK_SECRET_OVERLAP_HOURS} hours: update the receiver within "
                "that time."
            ),
            confirm="Yes, rotate",
        )
        return TemplateResponse(request, "admin/tracking/callbackendpoint/confirm.html", context)

    def enable_view(self, request: HttpRequest, pk: int):
        endpoint = self._endpoint(request, pk, change=True)
        change_url = reverse("admin:tracking_callbackendpoint_change", args=[endpoint.pk])
        if request.method == "POST":
            callbacks.endpoint_enable(endpoint)
            self.log_change(request, endpoint, "Enabled again.")
            self.message_user(request, "Enabled: waiting deliveries go now.", messages.SUCCESS)
            return HttpResponseRedirect(change_url)
        context = self._context(request, endpoint=endpoint)
        context.update(
            title="Enable the endpoint again",
            question=(
                f"It was disabled: {endpoint.disabled_reason} Its waiting deliveries are posted "
                "at once; events that happened while it was disabled were not queued."
            ),
            confirm="Yes, enable",
        )
        return TemplateResponse(request, "admin/tracking/callbackendpoint/confirm.html", context)

    def deliveries_view(self, request: HttpRequest, pk: int):
        endpoint = self._endpoint(request, pk, change=False)
        deliveries = CallbackDelivery.objects.filter(endpoint=endpoint).order_by("-pk")
        status = request.GET.get("status", "")
        if status in CallbackDelivery.Status.values:
            deliveries = deliveries.filter(status=status)
        before = request.GET.get("before", "")
        if before.isdigit() and len(before) < 19:
            deliveries = deliveries.filter(pk__lt=int(before))
        rows = list(deliveries[: LOG_PAGE + 1])
        context = self._context(request, endpoint=endpoint)
        context.update(
            title=f"Deliveries to {endpoint}",
            deliveries=rows[:LOG_PAGE],
            older=rows[LOG_PAGE - 1].pk if len(rows) > LOG_PAGE else None,
            status=status,
            statuses=CallbackDelivery.Status.choices,
            can_retry=self.has_change_permission(request, endpoint),
        )
        return TemplateResponse(request, "admin/tracking/callbackendpoint/deliveries.html", context)

    def retry_view(self, request: HttpRequest, pk: int, delivery_pk: int):
        endpoint = self._endpoint(request, pk, change=True)
        delivery = get_object_or_404(CallbackDelivery, pk=delivery_pk, endpoint=endpoint)
        log_url = reverse("admin:tracking_callbackendpoint_deliveries", args=[endpoint.pk])
        if request.method == "POST":
            callbacks.delivery_retry_now(delivery)
            self.log_change(request, endpoint, f"Delivery {delivery.event_id} retried.")
            note = "" if endpoint.enabled else " once the endpoint is enabled again"
            self.message_user(request, f"{delivery.event_id} will be posted now{note}.")
            return HttpResponseRedirect(log_url)
        context = self._context(request, endpoint=endpoint)
        context.update(
            title="Retry now",
            question=(
                f"Post {delivery.event_type} {delivery.event_id} to the endpoint again now? "
                "The receiver may get it twice (it dedupes by the event id)."
            ),
            confirm="Yes, retry now",
            cancel_url=log_url,
        )
        return TemplateResponse(request, "admin/tracking/callbackendpoint/confirm.html", context)

    def _context(self, request, **extra) -> dict:
        return {**self.admin_site.each_context(request), "opts": self.model._meta, **extra}


def _when(moment, empty: str = "") -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M") if moment else empty
