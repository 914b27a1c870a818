from django.urls import path, re_path

from campaigns.api import base, contacts, jobs, lists, views

app_name = "api"

urlpatterns = [
    path("messages", views.MessageListCreate.as_view(), name="messages"),
    path("messages/<int:pk>", views.MessageDetail.as_view(), name="message"),
    path("jobs", jobs.JobListCreate.as_view(), name="jobs"),
    path("jobs/<int:pk>", jobs.JobDetail.as_view(), name="job"),
    path("jobs/<int:pk>/cancel", jobs.JobCancel.as_view(), name="job-cancel"),
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
    # Last: any other path under /api/v1/ is a 404 in the error shape.
    re_path(r"", base.NotFoundView.as_view(), name="not-found"),
]
