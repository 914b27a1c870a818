from django.urls import path

from campaigns.api import jobs, views

app_name = "api"

urlpatterns = [
    path("messages", views.MessageListCreate.as_view(), name="messages"),
    path("messages/<int:pk>", views.MessageDetail.as_view(), name="message"),
    path("jobs", jobs.JobListCreate.as_view(), name="jobs"),
    path("jobs/<int:pk>", jobs.JobDetail.as_view(), name="job"),
    path("jobs/<int:pk>/cancel", jobs.JobCancel.as_view(), name="job-cancel"),
]
