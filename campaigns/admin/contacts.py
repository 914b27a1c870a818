"""Contacts in the admin: the form (the same rules as the CSV import), the import itself and
each contact's journeys."""

import zoneinfo

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import (
    HttpRequest,
    HttpResponseRedirect,
)
from django.urls import reverse
from import_export.admin import ImportExportModelAdmin
from import_export.forms import ConfirmImportForm, ImportForm
from import_export.results import RowResult

from campaigns import services
from campaigns.admin.audiences import (
    ContactAudiencesMixin,
    TypedAttributesForm,
    UnsubscribedFromListFilter,
)
from campaigns.contact_fields import (
    contact_attributes_check,
    contact_text_check,
    contact_time_zone_check,
)
from campaigns.models import Contact, ContactList
from campaigns.resources import (
    ContactCSV,
    ContactFileError,
    ContactResource,
    unreadable_text_message,
)
from tracking.reports.journeys import contact_journeys


class ContactImportForm(ImportForm):
    contact_list = forms.ModelChoiceField(
        queryset=ContactList.objects.all(),
        required=False,
        help_text="Add every imported contact to this list (optional).",
    )

    def clean_import_file(self):
        upload = self.cleaned_data["import_file"]
        # The import reads the whole file into memory and checks every row twice (preview,
        # then confirm), within one request each: a cap keeps both bounded.
        limit = settings.CONTACT_IMPORT_MAX_MB * 1_000_000
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file has {upload.size / 1_000_000:.1f} MB; an import takes at most "
                f"{settings.CONTACT_IMPORT_MAX_MB} MB (CONTACT_IMPORT_MAX_MB). "
                "Split it into smaller files and import each."
            )
        return upload


class ContactConfirmImportForm(ConfirmImportForm):
    contact_list = forms.ModelChoiceField(
        queryset=ContactList.objects.all(), required=False, widget=forms.HiddenInput
    )


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


def can_view_contacts(request: HttpRequest) -> bool:
    """Whether this user may read contacts' data (addresses, names, custom fields) anywhere in
    the admin: Django's view permission on Contact (view or change)."""
    return admin.site.get_model_admin(Contact).has_view_permission(request)


# A contact's page shows their newest notifications' journeys, each a few queries.
CONTACT_JOURNEYS_SHOWN = 20


@admin.register(Contact)
class ContactAdmin(ContactAudiencesMixin, ImportExportModelAdmin):
    form = ContactForm
    resource_classes = [ContactResource]
    import_form_class = ContactImportForm
    confirm_form_class = ContactConfirmImportForm
    import_formats = [ContactCSV]
    export_formats = [ContactCSV]  # the formula-safe cell rule; spreadsheets open CSV
    import_template_name = "admin/campaigns/contact/import.html"
    list_display = ("email", "first_name", "last_name", "status_shown", "created_at")
    list_filter = ("status", UnsubscribedFromListFilter, "lists")
    search_fields = ("email", "first_name", "last_name")
    readonly_fields = ("status", "created_at", "updated_at")
    show_full_result_count = False  # COUNT(*) over millions of contacts on every page

    # Permissions as Django's own views have them (import-export lets any staff user do both).
    def has_import_permission(self, request) -> bool:
        # An import adds contacts and overwrites existing ones.
        return self.has_add_permission(request) and self.has_change_permission(request)

    def has_export_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def create_import_form(self, request):
        return self._without_list_unless_allowed(request, super().create_import_form(request))

    def create_confirm_form(self, request, import_form=None):
        form = super().create_confirm_form(request, import_form)
        return self._without_list_unless_allowed(request, form)

    def _without_list_unless_allowed(self, request, form):
        # Adding the contacts to a list changes the list (what the next campaign sends to).
        if not self.admin_site.get_model_admin(ContactList).has_change_permission(request):
            form.fields.pop("contact_list", None)
        return form

    def get_import_resource_kwargs(self, request, **kwargs):
        form = kwargs.get("form")
        # The form is unbound when the import page is first shown: no list chosen yet.
        contact_list = getattr(form, "cleaned_data", {}).get("contact_list")
        return {
            **super().get_import_resource_kwargs(request, **kwargs),
            "contact_list": contact_list,
        }

    def get_import_data_kwargs(self, **kwargs):
        # One bad row rolls the whole file back at the confirm step too (the preview's check
        # may be stale by then: another import, a forged confirm).
        return {**super().get_import_data_kwargs(**kwargs), "rollback_on_validation_errors": True}

    def import_action(self, request, **kwargs):
        response = super().import_action(request, **kwargs)
        # import-export keeps a copy of every upload for the confirm step; a refused file never
        # gets one, so its copy (contacts' data) is removed now rather than left on disk.
        upload = request.FILES.get("import_file")
        stored = getattr(upload, "tmp_storage_name", None)
        if stored and "confirm_form" not in (getattr(response, "context_data", None) or {}):
            storage_class = self.get_tmp_storage_class()
            storage_class(name=stored, **self.get_tmp_storage_class_kwargs()).remove()
        return response

    def process_dataset(self, dataset, form, request, **kwargs):
        result = super().process_dataset(dataset, form, request, **kwargs)
        result.contact_list = form.cleaned_data.get("contact_list")
        return result

    def process_result(self, result, request):
        if result.has_errors() or result.has_validation_errors():
            messages.error(
                request,
                "Nothing was imported: the file no longer passes its checks. "
                "Upload it again to see each line's problem.",
            )
            return HttpResponseRedirect(reverse("admin:campaigns_contact_import"))
        return super().process_result(result, request)

    def generate_log_entries(self, result, request) -> None:
        """One admin log entry per import, with its counts (one per contact would double the
        writes of a large import)."""
        totals = result.totals
        contact_list = getattr(result, "contact_list", None)
        LogEntry.objects.create(
            user_id=request.user.pk,
            content_type=ContentType.objects.get_for_model(Contact),
            object_repr="Contacts import",
            action_flag=ADDITION,
            change_message=(
                f"Imported a CSV file: {totals[RowResult.IMPORT_TYPE_NEW]} new, "
                f"{totals[RowResult.IMPORT_TYPE_UPDATE]} updated, "
                f"{totals[RowResult.IMPORT_TYPE_SKIP]} unchanged"
                + (f"; added to list #{contact_list.pk}." if contact_list else ".")
            ),
        )

    def add_data_read_fail_error_to_form(self, form, e):
        if isinstance(e, ContactFileError):
            form.add_error("import_file", str(e))
        elif isinstance(e, UnicodeDecodeError):
            form.add_error("import_file", unreadable_text_message(e))
        else:
            super().add_data_read_fail_error_to_form(form, e)

    def get_confirm_form_initial(self, request, import_form):
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form is not None and import_form.cleaned_data.get("contact_list"):
            initial["contact_list"] = import_form.cleaned_data["contact_list"].pk
        return initial

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
