from django.urls import path, re_path

from campaigns.api import base, events, jobs, views

app_name = "api"

urlpatterns = [
    path("messages", views.MessageListCreate.as_view(), name="messages"),
    path("messages/<int:pk>", views.MessageDetail.as_view(), name="message"),
    path("events", events.EventList.as_view(), name="events"),
    path("jobs", jobs.JobListCreate.as_view(), name="jobs"),
    path("jobs/<int:pk>", jobs.JobDetail.as_view(), name="job"),
    path("jobs/<int:pk>/cancel", jobs.JobCancel.as_view(), name="job-cancel"),
    path("jobs/<int:pk>/resume", jobs.JobResume.as_view(), name="job-resume"),
    # Last: any other path under /api/v1/ is a 404 in the error shape.
    re_path(r"", base.NotFoundView.as_view(), name="not-found"),
]
