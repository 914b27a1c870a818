from django.urls import path

from campaigns.api import views

app_name = "api"

urlpatterns = [
    path("messages", views.MessageListCreate.as_view(), name="messages"),
    path("messages/<int:pk>", views.MessageDetail.as_view(), name="message"),
]
