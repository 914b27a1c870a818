from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from config.admin_access import admin_superuser_only
from tracking.ses_events.webhook import ses_webhook

# Beat's schedules can enqueue any task with any arguments: superusers only.
admin_superuser_only(admin.site, "django_celery_beat")

# Under /api/, a 500 in the API's one error shape (JSON); elsewhere Django's page.
handler500 = "campaigns.api.errors.server_error"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # The SES tracking webhook (tracking.ses_events.webhook), at the URL anymail gives it, so
    # existing SNS subscriptions need no change. Only this one: anymail's other webhooks (SES
    # inbound, other providers) are not mounted, so none of them answers anyone.
    path("webhooks/anymail/amazon_ses/tracking/", ses_webhook),
    path("t/", include("tracking.urls")),
    path("api/v1/", include("campaigns.api.urls")),
    # The API's OpenAPI schema, and its documentation pages (Swagger UI, Redoc) built from it:
    # public, as the code they are generated from is (docs/API.md#openapi-schema-and-docs).
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="api-schema", template_name="api/redoc.html"),
        name="api-redoc",
    ),
]
