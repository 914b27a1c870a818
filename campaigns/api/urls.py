from django.urls import path, re_path

from campaigns.api import base, jobs, views, webhooks

app_name = "api"

urlpatterns = [
    path("messages", views.MessageListCreate.as_view(), name="messages"),
    path("messages/<int:pk>", views.MessageDetail.as_view(), name="message"),
    path("jobs", jobs.JobListCreate.as_view(), name="jobs"),
    path("jobs/<int:pk>", jobs.JobDetail.as_view(), name="job"),
    path("jobs/<int:pk>/cancel", jobs.JobCancel.as_view(), name="job-cancel"),
    path("webhooks", webhooks.WebhookListCreate.as_view(), name="webhooks"),
    path("webhooks/<int:pk>", webhooks.WebhookDetail.as_view(), name="webhook"),
    path(
        "webhooks/<int:pk>/rotate-secret",
        webhooks.WebhookRotateSecret.as_view(),
        name="webhook-rotate-secret",
    ),
    path(
        "webhooks/<int:pk>/deliveries",
        webhooks.WebhookDeliveries.as_view(),
        name="webhook-deliveries",
    ),
    # Last: any other path under /api/v1/ is a 404 in the error shape.
    re_path(r"", base.NotFoundView.as_view(), name="not-found"),
]
