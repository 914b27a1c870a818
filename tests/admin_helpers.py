"""Driving the admin's contact import as a browser would: upload, match columns, check, import.

The check and the import are Celery tasks enqueued on commit: tests that go past the upload use
the `eager_celery` fixture, and these helpers run the on-commit callbacks."""

import re

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase

from campaigns.models import ContactList, ImportJob

IMPORT_URL = "/admin/campaigns/contact/import/"
EXPORT_URL = "/admin/campaigns/contact/export/"


def job_url(job: ImportJob, view: str = "") -> str:
    return f"{IMPORT_URL}{job.pk}/{view}"


def upload(client, content: str | bytes, *, delimiter: str = "", name: str = "contacts.csv"):
    data = content.encode() if isinstance(content, str) else content
    return client.post(
        IMPORT_URL,
        {"file": SimpleUploadedFile(name, data, "text/csv"), "delimiter": delimiter},
    )


def mapping_data(job: ImportJob, **overrides) -> dict:
    """The mapping form as the page first shows it (the guessed matches), with `overrides`."""
    data = {"existing": "add"}
    for i, entry in enumerate(job.mapping):
        data[f"to_{i}"] = entry["to"]
        data[f"name_{i}"] = entry.get("name", "")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return data


def check(client, job: ImportJob, **overrides):
    """Post the mapping (the check runs); returns the response."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(job_url(job), mapping_data(job, **overrides))


def start(client, job: ImportJob):
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(job_url(job, "start/"))


def uploaded(client, content: str | bytes, **kwargs) -> ImportJob:
    """Upload `content` (the upload must be accepted); the job it made."""
    response = upload(client, content, **kwargs)
    assert response.status_code == 302, _errors(response)
    return ImportJob.objects.latest("pk")


def checked(client, content: str | bytes, **choices) -> ImportJob:
    """Upload and check with the guessed matches and `choices`; the checked job."""
    job = uploaded(client, content)
    response = check(client, job, **choices)
    assert response.status_code == 302, _errors(response)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.CHECKED, job.status_reason
    return job


def import_file(
    client, content: str, contact_list: ContactList | None = None, *, update: bool = True
):
    """Upload, check with the guessed matches, import; returns (job, the last response)."""
    choices = {"existing": "update" if update else "add"}
    if contact_list is not None:
        choices["contact_list"] = contact_list.pk
    job = checked(client, content, **choices)
    response = start(client, job)
    job.refresh_from_db()
    return job, response


def _errors(response) -> str:
    page = response.content.decode()
    return (
        "\n".join(re.findall(r'<ul class="errorlist[^"]*">(.*?)</ul>', page, re.S)) or page[:2000]
    )
