from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from config.admin_access import admin_superuser_only
from tracking.ses_events.webhook import ses_webhook

# Beat's schedules can enqueue any task with any arguments: superusers only.
admin_superuser_only(admin.site, "django_celery_beat")

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # The SES tracking webhook (tracking.ses_events.webhook), at the URL anymail gives it, so
    # existing SNS subscriptions need no change. Only this one: anymail's other webhooks (SES
    # inbound, other providers) are not mounted, so none of them answers anyone.
    path("webhooks/anymail/amazon_ses/tracking/", ses_webhook),
    path("t/", include("tracking.urls")),
    path("api/v1/", include("campaigns.api.urls")),
]
