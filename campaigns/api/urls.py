from django.urls import path, re_path

from campaigns.api import (
    base,
    campaigns,
    contacts,
    events,
    jobs,
    lists,
    templates,
    views,
    webhooks,
)

app_name = "api"

urlpatterns = [
    path("messages", views.MessageListCreate.as_view(), name="messages"),
    path("messages/<int:pk>", views.MessageDetail.as_view(), name="message"),
    path("events", events.EventList.as_view(), name="events"),
    path("jobs", jobs.JobListCreate.as_view(), name="jobs"),
    path("jobs/<int:pk>", jobs.JobDetail.as_view(), name="job"),
    path("jobs/<int:pk>/cancel", jobs.JobCancel.as_view(), name="job-cancel"),
    path("templates", templates.TemplateListCreate.as_view(), name="templates"),
    path("templates/<int:pk>", templates.TemplateDetail.as_view(), name="template"),
    path(
        "templates/<int:pk>/preview", templates.TemplatePreview.as_view(), name="template-preview"
    ),
    path("campaigns", campaigns.CampaignListCreate.as_view(), name="campaigns"),
    path("campaigns/<int:pk>", campaigns.CampaignDetail.as_view(), name="campaign"),
    path(
        "campaigns/<int:pk>/schedule",
        campaigns.CampaignSchedule.as_view(),
        name="campaign-schedule",
    ),
    path("campaigns/<int:pk>/send", campaigns.CampaignSend.as_view(), name="campaign-send"),
    path("campaigns/<int:pk>/pause", campaigns.CampaignPause.as_view(), name="campaign-pause"),
    path("campaigns/<int:pk>/resume", campaigns.CampaignResume.as_view(), name="campaign-resume"),
    path("campaigns/<int:pk>/cancel", campaigns.CampaignCancel.as_view(), name="campaign-cancel"),
    path(
        "campaigns/<int:pk>/unschedule",
        campaigns.CampaignUnschedule.as_view(),
        name="campaign-unschedule",
    ),
    path(
        "campaigns/<int:pk>/report", campaigns.CampaignReportView.as_view(), name="campaign-report"
    ),
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
    path("contacts", contacts.ContactsView.as_view(), name="contacts"),
    path("contacts/upsert", contacts.ContactUpsert.as_view(), name="contacts-upsert"),
    path("contacts/bulk", contacts.ContactBulkUpsert.as_view(), name="contacts-bulk"),
    path("contacts/<int:pk>", contacts.ContactDetail.as_view(), name="contact"),
    path("contacts/<int:pk>/lists", contacts.ContactLists.as_view(), name="contact-lists"),
    path(
        "contacts/<int:pk>/lists/<int:list_pk>",
        contacts.ContactListMembership.as_view(),
        name="contact-list",
    ),
    path(
        "contacts/<int:pk>/unsubscribe",
        contacts.ContactUnsubscribe.as_view(),
        name="contact-unsubscribe",
    ),
    path("contacts/<int:pk>/suppress", contacts.ContactSuppress.as_view(), name="contact-suppress"),
    path("lists", lists.ListsView.as_view(), name="lists"),
    path("lists/<int:pk>", lists.ListDetail.as_view(), name="list"),
    path("jobs/<int:pk>/resume", jobs.JobResume.as_view(), name="job-resume"),
    # Last: any other path under /api/v1/ is a 404 in the error shape.
    re_path(r"", base.NotFoundView.as_view(), name="not-found"),
]
