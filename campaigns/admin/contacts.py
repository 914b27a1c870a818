"""Contacts in the admin: the form (the same rules as the CSV import), the export, the import's
pages (campaigns.admin.imports) and each contact's journeys."""

import zoneinfo

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from import_export.admin import ExportMixin

from campaigns import services
from campaigns.admin.audiences import (
    ContactAudiencesMixin,
    TypedAttributesForm,
    UnsubscribedFromListFilter,
)
from campaigns.admin.imports import ContactImportViews
from campaigns.contact_fields import (
    contact_attributes_check,
    contact_text_check,
    contact_time_zone_check,
)
from campaigns.erased import status_for_new_address
from campaigns.models import Contact
from campaigns.resources import ContactCSV, ContactResource
from tracking.erase import contact_erase
from tracking.reports.journeys import contact_journeys

TIME_ZONE_HELP = (
    "For campaigns sent at a local time in each contact's time zone. Not known: they get such "
    "a campaign at that time in the time zone of the person who schedules it."
)


def time_zone_widget() -> forms.Select:
    zones = sorted(zoneinfo.available_timezones())
    return forms.Select(choices=[("", "Not known"), *((zone, zone) for zone in zones)])


class ContactForm(TypedAttributesForm):
    """The rules of campaigns.contact_fields, as the CSV import applies them. The status is not
    here: it changes only by a resubscribe with a reason (campaigns.audiences)."""

    class Meta:
        model = Contact
        fields = ("email", "first_name", "last_name", "time_zone", "attributes")
        widgets = {"time_zone": time_zone_widget()}
        help_texts = {"time_zone": TIME_ZONE_HELP}

    def clean_email(self) -> str:
        # Normalized before the unique check, so "Ada@Example.com" meets "ada@example.com".
        return services.contact_normalize_email(self.cleaned_data["email"])

    def clean_first_name(self) -> str:
        return contact_text_check(self.cleaned_data["first_name"], label="first name")

    def clean_last_name(self) -> str:
        return contact_text_check(self.cleaned_data["last_name"], label="last name")

    def clean_time_zone(self) -> str:
        return contact_time_zone_check(self.cleaned_data["time_zone"])

    def clean_attributes(self) -> dict:
        return contact_attributes_check(self.cleaned_data["attributes"])

    def save(self, commit=True):
        if self.instance.pk is None or "email" in self.changed_data:
            # An erased address that was unsubscribed or suppressed stays so (campaigns.erased).
            self.instance.status = status_for_new_address(
                status=self.instance.status, address=self.instance.email
            )
        return super().save(commit)


def can_view_contacts(request: HttpRequest) -> bool:
    """Whether this user may read contacts' data (addresses, names, custom fields) anywhere in
    the admin: Django's view permission on Contact (view or change)."""
    return admin.site.get_model_admin(Contact).has_view_permission(request)


# A contact's page shows their newest notifications' journeys, each a few queries.
CONTACT_JOURNEYS_SHOWN = 20


@admin.register(Contact)
class ContactAdmin(ContactAudiencesMixin, ContactImportViews, ExportMixin, admin.ModelAdmin):
    form = ContactForm
    resource_classes = [ContactResource]
    export_formats = [ContactCSV]  # the formula-safe cell rule; spreadsheets open CSV
    # The export's button and the import's (campaigns.admin.imports).
    import_export_change_list_template = "admin/campaigns/contact/change_list.html"
    list_display = ("email", "first_name", "last_name", "status_shown", "created_at")
    list_filter = ("status", UnsubscribedFromListFilter, "lists")
    search_fields = ("email", "first_name", "last_name")
    readonly_fields = ("status", "created_at", "updated_at")
    show_full_result_count = False  # COUNT(*) over millions of contacts on every page

    def get_urls(self):
        return self.import_urls() + super().get_urls()

    def get_queryset(self, request):
        # An erased contact is nobody's (tracking.erase): its emptied row stays for the ledger.
        return super().get_queryset(request).filter(erased_at__isnull=True)

    # Deleting is erasing (tracking.erase), one contact or a selection: a contact that was
    # mailed cannot be deleted outright (the ledger keeps its rows), so it is emptied instead.
    def delete_model(self, request, obj) -> None:
        contact_erase(contact_id=obj.pk)

    def delete_queryset(self, request, queryset) -> None:
        for pk in queryset.values_list("pk", flat=True):
            contact_erase(contact_id=pk)

    def get_deleted_objects(self, objs, request):
        # Django's cascade is not what happens: the erase deletes or empties the contact's
        # own rows itself and never the ledger's, whose rows "protect" a mailed contact (and
        # whose admin deletes nothing). Deleting a contact needs its own permission only.
        deleted, counts, _perms_needed, _protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), []

    def has_export_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "has_import_permission": self.has_import_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # "Where did my email to X go?": their newest notifications, each with its journey.
        contact = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if contact is not None and self.has_view_or_change_permission(request, contact):
            extra_context["journeys"] = contact_journeys(
                contact_id=contact.pk, limit=CONTACT_JOURNEYS_SHOWN
            )
            extra_context["journeys_limit"] = CONTACT_JOURNEYS_SHOWN
        return super().change_view(request, object_id, form_url, extra_context)
