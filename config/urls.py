from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from config.admin_access import admin_superuser_only
from tracking.webhooks import SesTrackingWebhookView

admin.site.site_header = "Mailwright"
admin.site.site_title = "Mailwright"
admin.site.index_title = "Email marketing"
# Beat's schedules can enqueue any task with any arguments: superusers only.
admin_superuser_only(admin.site, "django_celery_beat")

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # anymail's SES tracking webhook, with SNS signatures verified first (tracking.webhooks):
    # matched before anymail's own route for the same URL.
    path("webhooks/anymail/amazon_ses/tracking/", SesTrackingWebhookView.as_view()),
    path("webhooks/anymail/", include("anymail.urls")),
    path("t/", include("tracking.urls")),
]
