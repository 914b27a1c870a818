"""The contact import's pages (campaigns.imports does the work): upload, match the columns,
the check's summary with every refused line, then the import with its progress bar.

Who may: add and change contacts to import at all; change lists to add the contacts to a
list; add lists to create one here.
"""

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from campaigns import imports
from campaigns.admin.exports import csv_download
from campaigns.models import Contact, ContactList, ImportJob, ImportRowError

S = ImportJob.Status
ERRORS_PER_PAGE = 100
ADD_ONLY, UPDATE = "add", "update"


class UploadForm(forms.Form):
    file = forms.FileField(label="CSV file")
    delimiter = forms.ChoiceField(
        label="Columns separated by",
        choices=[
            ("", "Detect automatically"),
            (",", "Commas"),
            (";", "Semicolons"),
            ("\t", "Tabs"),
        ],  # fmt: skip
        required=False,
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        # The file is stored in the database and read whole by the check and the import.
        limit = settings.CONTACT_IMPORT_MAX_MB * 1_000_000
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file has {upload.size / 1_000_000:.1f} MB; an import takes at most "
                f"{settings.CONTACT_IMPORT_MAX_MB} MB (CONTACT_IMPORT_MAX_MB). "
                "Split it into smaller files and import each."
            )
        return upload


def _target_choices() -> list[tuple[str, str]]:
    return [
        *((field, spec.label) for field, spec in imports.IMPORT_FIELDS.items()),
        (imports.CUSTOM, "A custom field, named:"),
        (imports.SKIP, "Skip this column"),
    ]


class MappingForm(forms.Form):
    contact_list = forms.ModelChoiceField(
        label="Add the contacts to the list",
        queryset=ContactList.objects.all(),
        required=False,
        empty_label="(no list)",
    )
    new_list_name = forms.CharField(label="…or to a new list named", max_length=200, required=False)
    existing = forms.ChoiceField(
        label="Contacts already here",
        widget=forms.RadioSelect,
        initial=ADD_ONLY,
        choices=[
            (ADD_ONLY, "Add new contacts only: contacts already here stay as they are"),
            (
                UPDATE,
                "Also update existing contacts: their names and custom fields from the "
                "file (empty cells change nothing)",
            ),
        ],  # fmt: skip
        help_text="Either way, nobody's subscription changes: an import never resubscribes "
        "anybody, and unsubscribes from a list stay.",
    )

    def __init__(self, *args, header: list[str], mapping: list[dict], request, **kwargs):
        super().__init__(*args, **kwargs)
        self.header = header
        for i, (column, entry) in enumerate(zip(header, mapping, strict=True)):
            self.fields[f"to_{i}"] = forms.ChoiceField(
                label=column or f"(column {i + 1}, unnamed)",
                choices=_target_choices(),
                initial=entry["to"],
            )
            self.fields[f"name_{i}"] = forms.CharField(
                label=f"Custom field name for {column}",
                required=False,
                initial=entry.get("name", ""),
                max_length=100,
            )
        list_admin = admin.site.get_model_admin(ContactList)
        if not list_admin.has_change_permission(request):
            del self.fields["contact_list"]
        if not list_admin.has_add_permission(request):
            del self.fields["new_list_name"]

    def columns(self):
        return [(self[f"to_{i}"], self[f"name_{i}"]) for i in range(len(self.header))]

    def clean_new_list_name(self) -> str:
        name = self.cleaned_data["new_list_name"].strip()
        if name and ContactList.objects.filter(name__iexact=name).exists():
            raise forms.ValidationError("A list has this name already: choose it above.")
        return name

    def clean(self):
        data = super().clean()
        if data.get("contact_list") and data.get("new_list_name"):
            raise forms.ValidationError("Choose a list or name a new one, not both.")
        mapping = self.mapping()
        if mapping is not None:
            for problem in imports.mapping_check(mapping, self.header):
                self.add_error(None, problem)
        return data

    def mapping(self) -> list[dict] | None:
        data = self.cleaned_data
        if any(f"to_{i}" not in data for i in range(len(self.header))):
            return None
        return [
            {"to": data[f"to_{i}"], "name": data.get(f"name_{i}", "").strip()}
            for i in range(len(self.header))
        ]


class ContactImportViews:
    """Mixed into ContactAdmin: the import's URLs and views."""

    def import_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_upload_view), name="campaigns_contact_import"),
            path("import/<int:pk>/", view(self.import_job_view),
                 name="campaigns_contact_import_job"),
            path("import/<int:pk>/start/", view(self.import_start_view),
                 name="campaigns_contact_import_start"),
            path("import/<int:pk>/progress.json", view(self.import_progress_view),
                 name="campaigns_contact_import_progress"),
            path("import/<int:pk>/errors.csv", view(self.import_errors_view),
                 name="campaigns_contact_import_errors"),
        ]  # fmt: skip

    def has_import_permission(self, request: HttpRequest) -> bool:
        # An import adds contacts and may change existing ones.
        return self.has_add_permission(request) and self.has_change_permission(request)

    def _import_job(self, request: HttpRequest, pk: int) -> ImportJob:
        if not self.has_import_permission(request):
            raise PermissionDenied
        # The file (up to CONTACT_IMPORT_MAX_MB) is read only by the views that show it: not by
        # the progress poll, every second while a job runs.
        job = get_object_or_404(ImportJob.objects.defer("data"), pk=pk)
        imports.import_job_fail_if_stale(job=job)
        return job

    def _import_context(self, request, **context) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": Contact._meta,
            "title": "Import contacts",
            **context,
        }

    def import_upload_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = UploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                job = imports.import_job_create(
                    user_id=request.user.pk,
                    file_name=upload.name or "contacts.csv",
                    data=upload.read(),
                    delimiter=form.cleaned_data["delimiter"],
                )
            except imports.ImportFileError as err:
                form.add_error("file", str(err))
            else:
                return HttpResponseRedirect(
                    reverse("admin:campaigns_contact_import_job", args=[job.pk])
                )
        return TemplateResponse(
            request,
            "admin/campaigns/contact/import.html",
            self._import_context(request, form=form, max_mb=settings.CONTACT_IMPORT_MAX_MB),
        )

    def import_job_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self._import_job(request, pk)
        context = {"job": job, "delimiter_name": imports.DELIMITERS.get(job.delimiter)}
        if job.status in (S.MAPPING, S.CHECKED) and (
            job.status == S.MAPPING or "remap" in request.GET or request.method == "POST"
        ):
            header, samples = imports.import_job_header(job)
            form = MappingForm(
                request.POST if request.method == "POST" else None,
                header=header,
                mapping=job.mapping,
                request=request,
                initial={
                    "contact_list": job.contact_list_id,
                    "existing": UPDATE if job.update_existing else ADD_ONLY,
                },
            )
            if request.method == "POST" and form.is_valid():
                imports.import_job_map(
                    job=job,
                    mapping=form.mapping(),
                    contact_list=form.cleaned_data.get("contact_list"),
                    new_list_name=form.cleaned_data.get("new_list_name", ""),
                    update_existing=form.cleaned_data["existing"] == UPDATE,
                )
                return HttpResponseRedirect(request.path)
            context["form"] = form
            context["columns"] = list(zip(form.columns(), samples, strict=True))
        if job.status in (S.CHECKED, S.DONE):
            errors = ImportRowError.objects.filter(job=job).order_by("line")
            context["errors_page"] = Paginator(errors, ERRORS_PER_PAGE).get_page(
                request.GET.get("page")
            )
            context["valid_rows"] = job.new_count + job.updated_count + job.unchanged_count
            context["refused_rows"] = job.error_count + job.duplicate_count
        return TemplateResponse(
            request,
            "admin/campaigns/contact/import_job.html",
            self._import_context(request, **context),
        )

    def import_start_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = self._import_job(request, pk)
        imports.import_job_start(job=job)
        return HttpResponseRedirect(reverse("admin:campaigns_contact_import_job", args=[job.pk]))

    def import_progress_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        job = self._import_job(request, pk)
        return JsonResponse(
            {
                "status": job.status,
                "processed": job.processed_rows,
                "total": job.total_rows,
                "new": job.new_count,
                "updated": job.updated_count,
                "unchanged": job.unchanged_count,
            }
        )

    def import_errors_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self._import_job(request, pk)
        if job.status not in (S.CHECKED, S.IMPORTING, S.DONE, S.FAILED):
            raise Http404
        return csv_download(
            imports.import_error_rows(job=job),
            filename=f"import-{job.pk}-refused-rows.csv",
            stream=True,
        )
