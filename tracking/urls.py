from django.urls import path

from tracking.hits import views
from tracking.unsubscribe import views as unsubscribe_views

app_name = "tracking"
urlpatterns = [
    path("o/<str:token>.gif", views.open_pixel, name="open"),
    path("c/<str:token>/<int:index>", views.click, name="click"),
    # RFC 8058 one-click POST, and the page (GET) with its form (POST): one view, see there.
    path("u/<str:token>", unsubscribe_views.unsubscribe, name="unsubscribe"),
]
