from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "Mailwright"
admin.site.site_title = "Mailwright"
admin.site.index_title = "Email marketing"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # anymail's SES tracking webhook: /webhooks/anymail/amazon_ses/tracking/
    path("webhooks/anymail/", include("anymail.urls")),
    path("t/", include("tracking.urls")),
]
