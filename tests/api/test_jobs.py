"""POST /api/v1/jobs and friends in-process (tasks eager), through the real SES client talking
to the local endpoint, on PostgreSQL."""

import pytest

from campaigns import jobs, services
from campaigns.models import (
    Campaign,
    Contact,
    JobRequest,
    JobRow,
    MessageRequest,
    Notification,
)
from tests.api.helpers import api_client
from tests.factories import ContactFactory, TemplateFactory

pytestmark = pytest.mark.django_db(transaction=True)

N = Notification.Status


@pytest.fixture
def template():
    return TemplateFactory(
        slug="statement",
        subject="Statement {{ month }}",
        html="<p>Hello {{ first_name }}, your {{ month }} statement is ready.</p>",
        text="Hello {{ first_name }}, your {{ month }} statement is ready.",
    )


def rows(n: int, tag: str = "r") -> list[dict]:
    return [
        {
            "to": f"{tag}{i}@example.com",
            "personalisation": {"first_name": f"P{i}", "month": "May"},
            "reference": f"{tag}-{i}",
        }
        for i in range(n)
    ]


def nothing_created() -> bool:
    return not (
        Campaign.objects.filter(kind=Campaign.Kind.JOB).exists()
        or JobRow.objects.exists()
        or Contact.objects.exists()
        or Notification.objects.exists()
    )


def test_a_json_job_is_accepted_durable_and_sent_with_each_rows_personalisation(
    template, ses, eager_celery
):
    client = api_client()
    answer = client.post("/api/v1/jobs", {"template": "statement", "rows": rows(3)}, format="json")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["rows"] == 3 and body["invalid_count"] == 0
    job = Campaign.objects.get(pk=body["id"])
    assert job.kind == Campaign.Kind.JOB
    assert job.contact_list_id is None and job.api_key_id == client.key.pk
    assert job.send_path == Campaign.SendPath.BULK and not job.test_mode
    assert job.status == Campaign.Status.SENT
    assert job.recipient_count == 3 and job.frozen_at is not None
    assert not JobRow.objects.filter(job_id=job.pk).exists()  # forgotten once frozen

    sent = {m["recipients"][0]: str(m) for m in ses.messages()}
    assert set(sent) == {"r0@example.com", "r1@example.com", "r2@example.com"}
    assert "Hello P1, your May statement" in sent["r1@example.com"]
    assert ses.stats()["duplicate_recipients"] == 0
    by_contact = {
        r.notification.contact.email: r.reference
        for r in MessageRequest.objects.select_related("notification__contact")
    }
    assert by_contact == {f"r{i}@example.com": f"r-{i}" for i in range(3)}

    shown = client.get(f"/api/v1/jobs/{job.pk}").json()
    assert shown["status"] == "sent"
    assert shown["counts"]["sent"] == 3 and shown["counts"]["pending"] == 0
    assert shown["progress"] == {
        "rows_created": 3,
        "rows_total": 3,
        "sent": 3,
        "answered": 3,
        "total": 3,
    }
    assert shown["invalid_rows"] == []
    [listed] = client.get("/api/v1/jobs").json()["results"]
    assert listed["counts"] == shown["counts"] and listed["progress"] == shown["progress"]


def test_every_row_is_checked_and_a_bad_one_refuses_the_whole_job(template):
    client = api_client()
    given = rows(4)
    given[1]["to"] = "not an address"
    given[2]["personalisation"] = {"nested": {"no": 1}}
    given[3]["to"] = "R0@Example.com"  # row 1's address, as normalized
    given.append({"to": "x@example.com", "personalization": {}})  # a typo'd field
    given.append({"to": "y@example.com", "reference": "a\x00b"})  # PostgreSQL refuses NUL
    answer = client.post("/api/v1/jobs", {"template": "statement", "rows": given}, format="json")
    assert answer.status_code == 422, answer.content
    body = answer.json()
    found = {(e["row"], e["field"], e["code"]) for e in body["errors"]}
    assert found == {
        (2, "to", "invalid_address"),
        (3, "personalisation", "invalid_value"),
        (4, "to", "duplicate_address"),
        (5, "personalization", "unknown_field"),
        (6, "reference", "invalid"),
    }
    assert all(set(e) == {"code", "field", "message", "row"} for e in body["errors"])
    assert body["error_count"] == 5
    assert nothing_created()


def test_row_errors_are_capped_with_their_total(template, monkeypatch):
    monkeypatch.setattr(jobs, "ROW_ERRORS_SHOWN", 5)
    answer = api_client().post(
        "/api/v1/jobs",
        {"template": "statement", "rows": [{"to": f"bad{i}"} for i in range(12)]},
        format="json",
    )
    assert answer.status_code == 422
    assert len(answer.json()["errors"]) == 5
    assert answer.json()["error_count"] == 12
    assert nothing_created()


def test_skip_invalid_rows_sends_the_rest_and_reports_what_it_skipped(template, ses, eager_celery):
    client = api_client()
    given = rows(3)
    given[1]["to"] = "nobody@"
    answer = client.post(
        "/api/v1/jobs",
        {"template": "statement", "rows": given, "skip_invalid_rows": True},
        format="json",
    )
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["rows"] == 2 and body["invalid_count"] == 1
    assert [(e["row"], e["code"]) for e in body["invalid_rows"]] == [(2, "invalid_address")]
    assert ses.stats()["recipients"] == 2
    shown = client.get(f"/api/v1/jobs/{body['id']}").json()
    assert shown["invalid_count"] == 1 and shown["invalid_rows"] == body["invalid_rows"]
    assert shown["counts"]["sent"] == 2 and shown["status"] == "sent"


def test_a_job_of_only_invalid_rows_is_refused(template):
    answer = api_client().post(
        "/api/v1/jobs",
        {"template": "statement", "rows": [{"to": "x"}], "skip_invalid_rows": True},
        format="json",
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["code"] == "no_valid_rows"
    assert nothing_created()


CSV = (
    "Email;First Name;Month;Reference\r\n"
    "ada@example.com;Ada;June;a-1\r\n"
    "grace@example.com;Grâce;;g-1\r\n"
).encode("cp1252")


def test_a_csv_upload_becomes_a_job_detecting_its_encoding_and_delimiter(
    template, ses, eager_celery
):
    client = api_client()
    from django.core.files.uploadedfile import SimpleUploadedFile

    answer = client.post(
        "/api/v1/jobs",
        {"template": "statement", "file": SimpleUploadedFile("rows.csv", CSV, "text/csv")},
        format="multipart",
    )
    assert answer.status_code == 202, answer.content
    requests = {
        r.notification.contact.email: r
        for r in MessageRequest.objects.select_related("notification__contact")
    }
    assert requests["ada@example.com"].personalisation == {"first_name": "Ada", "month": "June"}
    # An empty cell is left out: the contact's own value (none here) would fill it.
    assert requests["grace@example.com"].personalisation == {"first_name": "Grâce"}
    assert requests["grace@example.com"].reference == "g-1"
    assert ses.stats()["recipients"] == 2


def test_a_text_csv_body_takes_its_fields_from_the_query_string(template, ses, eager_celery):
    body = b"to,month\nlin@example.com,July\nbroken@example.com,July,extra\n"
    client = api_client()
    refused = client.post("/api/v1/jobs?template=statement", body, content_type="text/csv")
    assert refused.status_code == 422
    [row_error] = refused.json()["errors"]
    assert row_error["row"] == 2 and row_error["code"] == "unreadable_row"
    assert row_error["line"] == 3
    assert nothing_created()
    answer = client.post(
        "/api/v1/jobs?template=statement&skip_invalid_rows=true", body, content_type="text/csv"
    )
    assert answer.status_code == 202, answer.content
    assert answer.json()["rows"] == 1 and answer.json()["invalid_count"] == 1
    assert [m["recipients"] for m in ses.messages()] == [["lin@example.com"]]


def test_a_csv_without_an_address_column_is_refused(template):
    answer = api_client().post(
        "/api/v1/jobs?template=statement", b"name\nAda\n", content_type="text/csv"
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["code"] == "no_address_column"


def test_request_errors_come_in_the_one_shape(template):
    client = api_client()
    cases = [
        ({"template": "nope", "rows": rows(1)}, 422, "template_not_found"),
        ({"template": "statement", "rows": []}, 400, "no_rows"),
        ({"template": "statement", "rows": "a@b.c"}, 400, "invalid"),
        ({"template": "statement"}, 422, "required"),
        ({"template": "statement", "rows": rows(1), "colour": 1}, 400, "unknown_field"),
    ]
    for body, status, code in cases:
        answer = client.post("/api/v1/jobs", body, format="json")
        assert answer.status_code == status, (body, answer.content)
        assert answer.json()["errors"][0]["code"] == code, answer.content
    assert nothing_created()


def test_too_many_rows_are_refused(template, monkeypatch):
    monkeypatch.setattr(jobs, "JOB_MAX_ROWS", 3)
    answer = api_client().post(
        "/api/v1/jobs", {"template": "statement", "rows": rows(4)}, format="json"
    )
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["code"] == "too_many_rows"
    csv = b"email\n" + b"".join(b"a%d@example.com\n" % i for i in range(4))
    answer = api_client().post("/api/v1/jobs?template=statement", csv, content_type="text/csv")
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["code"] == "too_many_rows"
    assert nothing_created()


def test_scopes_and_modes_keep_jobs_apart(template):
    sender = api_client(scopes=["messages:send"])
    answer = sender.post("/api/v1/jobs", {"template": "statement", "rows": rows(1)}, format="json")
    assert answer.status_code == 403

    live, test = api_client(), api_client(test=True)
    later = {"template": "statement", "rows": rows(1), "send_at": "2099-01-01T00:00:00Z"}
    job = live.post("/api/v1/jobs", later, format="json").json()
    assert live.get(f"/api/v1/jobs/{job['id']}").status_code == 200
    assert test.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert test.get("/api/v1/jobs").json()["results"] == []
    assert live.get(f"/api/v1/jobs/{2**64}").status_code == 404
    assert live.post(f"/api/v1/jobs/{2**64}/cancel").status_code == 404


def test_a_test_keys_job_is_in_test_mode_and_stores_no_template_at_ses(template, ses):
    client = api_client(test=True)
    answer = client.post("/api/v1/jobs", {"template": "statement", "rows": rows(2)}, format="json")
    assert answer.status_code == 202
    job = Campaign.objects.get(pk=answer.json()["id"])
    assert job.test_mode
    services.campaign_start(campaign_id=job.pk)  # the worker's step, without its batches
    job.refresh_from_db()
    assert job.status == Campaign.Status.SENDING and job.ses_template_name
    assert stored_templates(ses) == []

    live = api_client().post(
        "/api/v1/jobs", {"template": "statement", "rows": rows(2)}, format="json"
    )
    services.campaign_start(campaign_id=live.json()["id"])
    assert len(stored_templates(ses)) == 1  # (the same step stores a live job's)


def stored_templates(ses) -> list:
    import boto3

    client = boto3.client("sesv2", endpoint_url=ses.url, region_name="us-east-1")
    return client.list_email_templates()["TemplatesMetadata"]


def test_a_scheduled_job_waits_and_can_be_cancelled(template, eager_celery, ses):
    client = api_client()
    answer = client.post(
        "/api/v1/jobs",
        {"template": "statement", "rows": rows(2), "send_at": "2099-01-01T00:00:00Z"},
        format="json",
    )
    assert answer.status_code == 202
    job_id = answer.json()["id"]
    assert Campaign.objects.get(pk=job_id).status == Campaign.Status.SCHEDULED
    assert services.campaigns_start_due() == []
    cancelled = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["status"] == "cancelled"
    assert not JobRow.objects.filter(job_id=job_id).exists()
    again = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.json()["errors"][0]["code"] == "not_cancellable"
    assert ses.stats()["recipients"] == 0


def test_cancelling_a_sending_job_skips_its_unsent_rows(template):
    client = api_client()
    job_id = client.post(
        "/api/v1/jobs", {"template": "statement", "rows": rows(5)}, format="json"
    ).json()["id"]
    # The worker's start, its batches left in the queue (tasks are not eager here).
    services.campaign_start(campaign_id=job_id)
    assert Notification.objects.filter(campaign_id=job_id, status=N.CREATED).count() == 5
    answer = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert answer.json()["status"] == "cancelled"
    assert answer.json()["counts"]["skipped"] == 5
    assert answer.json()["counts"]["pending"] == 0
    assert set(
        Notification.objects.filter(campaign_id=job_id).values_list("status", flat=True)
    ) == {N.SKIPPED}


def test_jobs_are_listed_newest_first_with_a_cursor(template):
    client = api_client()
    made = [
        client.post(
            "/api/v1/jobs",
            {"template": "statement", "rows": rows(1, f"t{i}"), "send_at": "2099-01-01T00:00:00Z"},
            format="json",
        ).json()["id"]
        for i in range(3)
    ]
    first = client.get("/api/v1/jobs?limit=2").json()
    assert [j["id"] for j in first["results"]] == made[::-1][:2]
    second = client.get(first["next"]).json()
    assert [j["id"] for j in second["results"]] == made[:1]
    assert second["next"] is None


def test_an_existing_contact_is_reused_and_a_suppressed_one_skipped(template, ses, eager_celery):
    ContactFactory(email="known@example.com", first_name="Known")
    ContactFactory(email="gone@example.com", status="bounced")
    answer = api_client().post(
        "/api/v1/jobs",
        {
            "template": "statement",
            "rows": [
                {"to": "Known@example.com", "personalisation": {"month": "May"}},
                {"to": "gone@example.com"},
            ],
        },
        format="json",
    )
    assert answer.status_code == 202
    assert Contact.objects.count() == 2
    statuses = dict(
        Notification.objects.filter(campaign_id=answer.json()["id"]).values_list(
            "contact__email", "status"
        )
    )
    assert statuses == {"known@example.com": N.SENT, "gone@example.com": N.SKIPPED}
    [sent] = ses.messages()
    assert "Hello Known, your May statement" in str(sent)  # the contact's name fills in


def test_creation_resumed_after_a_crash_makes_no_row_twice(template, monkeypatch):
    """The freeze killed after its first chunk committed (the chunk's rows and checkpoint
    together), and also with the checkpoint lost: running it again creates each row once."""
    monkeypatch.setattr(jobs, "JOB_CHUNK", 4)
    job_id = (
        api_client()
        .post("/api/v1/jobs", {"template": "statement", "rows": rows(10)}, format="json")
        .json()["id"]
    )
    services.campaign_transition(campaign_id=job_id, from_statuses={"scheduled"}, to="sending")
    chunks = list(jobs.job_chunks(job_id=job_id))
    assert chunks == [(1, 4), (5, 8), (9, 10)]
    from django.db import transaction

    with transaction.atomic():
        first = jobs.job_rows_freeze(job_id=job_id, first_row=1, last_row=4)
    assert len(first) == 4
    assert JobRequest.objects.get(pk=job_id).rows_done_through == 4
    assert list(jobs.job_chunks(job_id=job_id)) == [(5, 8), (9, 10)]
    # As if the checkpoint had not been written: every chunk again.
    JobRequest.objects.filter(pk=job_id).update(rows_done_through=0)
    with transaction.atomic():
        assert jobs.job_rows_freeze(job_id=job_id, first_row=1, last_row=4) == []
    assert services.campaign_freeze(campaign_id=job_id) == 10
    ledger = Notification.objects.filter(campaign_id=job_id)
    assert ledger.count() == 10
    assert ledger.values("contact_id").distinct().count() == 10
    assert MessageRequest.objects.filter(notification__campaign_id=job_id).count() == 10
    job = Campaign.objects.get(pk=job_id)
    assert job.recipient_count == 10 and job.frozen_at is not None
    assert not JobRow.objects.filter(job_id=job_id).exists()
    # A freeze run once more (one the sweeper enqueued while the first waited in the queue)
    # does nothing: not even frozen_at moves.
    assert services.campaign_freeze(campaign_id=job_id) == 10
    assert Campaign.objects.get(pk=job_id).frozen_at == job.frozen_at


def test_bodies_it_cannot_read_are_refused_in_the_one_shape(template, monkeypatch):
    from campaigns.api import jobs as api_jobs

    client = api_client()
    broken = client.post("/api/v1/jobs", b'{"template": ', content_type="application/json")
    assert broken.status_code == 400
    assert broken.json()["errors"][0]["code"] == "invalid_json"
    xml = client.post("/api/v1/jobs", b"<rows/>", content_type="application/xml")
    assert xml.status_code == 415
    assert set(xml.json()["errors"][0]) == {"code", "field", "message"}
    binary = client.post(
        "/api/v1/jobs?template=statement", b"PK\x03\x04\x00\x00", content_type="text/csv"
    )
    assert binary.status_code == 422
    assert binary.json()["errors"][0]["code"] == "invalid_file"
    monkeypatch.setattr(api_jobs, "JOB_MAX_BODY_BYTES", 100)
    large = client.post("/api/v1/jobs", {"template": "statement", "rows": rows(5)}, format="json")
    assert large.status_code == 413
    assert large.json()["errors"][0]["code"] == "request_too_large"
    assert nothing_created()


def test_the_demos_portable_writes_make_the_same_rows(template):
    """The ORM path the demo's SQLite takes (staging and freezing), run here on PostgreSQL:
    the same rows as the set-based statements, and a chunk written twice adds nothing."""
    from django.db import transaction

    from tests.factories import CampaignFactory

    job = CampaignFactory(kind=Campaign.Kind.JOB, contact_list=None, template=template)
    checked = jobs.job_rows_check(rows(3) + [{"to": "p-old@example.com"}])
    ContactFactory(email="p-old@example.com", first_name="Old")
    jobs._stage_portable(job.pk, checked.valid)
    assert JobRow.objects.filter(job_id=job.pk).count() == 4
    with transaction.atomic():
        made = jobs._freeze_portable(job.pk, 1, 4, None)
        assert jobs._freeze_portable(job.pk, 1, 4, None) == []
    ledger = Notification.objects.filter(campaign_id=job.pk)
    assert sorted(ledger.values_list("id", flat=True)) == made and len(made) == 4
    assert Contact.objects.count() == 4
    requests = {
        r.notification.contact.email: r
        for r in MessageRequest.objects.select_related("notification__contact")
    }
    assert requests["r2@example.com"].personalisation == {"first_name": "P2", "month": "May"}
    assert requests["r2@example.com"].reference == "r-2"
    assert requests["p-old@example.com"].personalisation == {}


def test_a_crash_before_the_commit_stores_nothing(template, monkeypatch):
    """The rows staged, then the request dies before its transaction commits: a 500, and no
    job, row, contact or message is left (the 202 comes only after the commit)."""
    staged = jobs._stage

    def stage_then_crash(job_id, rows):
        staged(job_id, rows)
        assert JobRow.objects.filter(job_id=job_id).count() == len(rows)
        raise RuntimeError("injected: the process dies before the commit")

    monkeypatch.setattr(jobs, "_stage", stage_then_crash)
    client = api_client()
    client.raise_request_exception = False
    answer = client.post("/api/v1/jobs", {"template": "statement", "rows": rows(3)}, format="json")
    assert answer.status_code == 500
    assert nothing_created()


def test_a_scheduled_job_starts_when_due_with_the_template_it_was_accepted_with(
    template, ses, eager_celery
):
    client = api_client()
    job_id = client.post(
        "/api/v1/jobs",
        {"template": "statement", "rows": rows(2), "send_at": "2099-01-01T00:00:00Z"},
        format="json",
    ).json()["id"]
    template.subject = "Edited after the job was accepted"
    template.save()
    assert services.campaigns_start_due() == []
    Campaign.objects.filter(pk=job_id).update(scheduled_at="2020-01-01T00:00:00Z")  # due now
    assert services.campaigns_start_due() == [job_id]
    assert Campaign.objects.get(pk=job_id).status == Campaign.Status.SENT
    subjects = {m["subject"] for m in ses.messages()}
    assert subjects == {"Statement May"}


def test_a_job_cancelled_during_creation_creates_no_more_rows(template, monkeypatch):
    """Cancelled after its first chunk: those rows end skipped, the freeze stops at its next
    chunk, and the staged rows are gone, so a freeze run later (the sweeper's) adds nothing."""
    monkeypatch.setattr(jobs, "JOB_CHUNK", 3)
    client = api_client()
    job_id = client.post(
        "/api/v1/jobs", {"template": "statement", "rows": rows(7)}, format="json"
    ).json()["id"]
    services.campaign_transition(campaign_id=job_id, from_statuses={"scheduled"}, to="sending")
    from django.db import transaction

    with transaction.atomic():
        jobs.job_rows_freeze(job_id=job_id, first_row=1, last_row=3)
    answer = client.post(f"/api/v1/jobs/{job_id}/cancel").json()
    assert answer["status"] == "cancelled"
    assert answer["progress"]["rows_created"] == 0  # (the freeze's own count, not done here)
    assert services.campaign_freeze(campaign_id=job_id) == 0
    ledger = Notification.objects.filter(campaign_id=job_id)
    assert ledger.count() == 3
    assert set(ledger.values_list("status", flat=True)) == {N.SKIPPED}
    assert not JobRow.objects.filter(job_id=job_id).exists()
    assert client.get(f"/api/v1/jobs/{job_id}").json()["counts"]["skipped"] == 3


def test_the_jobs_list_pages_as_the_messages_list_does(template):
    client = api_client()
    for i in range(3):
        client.post(
            "/api/v1/jobs",
            {"template": "statement", "rows": rows(1, f"p{i}"), "send_at": "2099-01-01T00:00:00Z"},
            format="json",
        )
    page = client.get("/api/v1/jobs?limit=2").json()
    assert set(page) == {"results", "next"}
    refused = client.get("/api/v1/jobs?limit=101")
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "limit"
    forged = client.get("/api/v1/jobs?cursor=bm9wZQ")
    assert forged.status_code == 400
    assert forged.json()["errors"][0]["code"] == "invalid_cursor"


def test_a_csv_row_error_names_its_file_line_as_well_as_its_row(template):
    # A blank line and a quoted line break: row 3 starts on line 6.
    body = b'to,note\nada@example.com,hi\n\ngrace@example.com,"two\nlines"\nnot-an-address,x\n'
    refused = api_client().post("/api/v1/jobs?template=statement", body, content_type="text/csv")
    assert refused.status_code == 422
    [row_error] = refused.json()["errors"]
    assert (row_error["row"], row_error["line"], row_error["code"]) == (3, 6, "invalid_address")


def test_json_row_errors_have_no_line(template):
    refused = api_client().post(
        "/api/v1/jobs", {"template": "statement", "rows": [{"to": "nope"}]}, format="json"
    )
    assert refused.status_code == 422
    assert "line" not in refused.json()["errors"][0]


def test_a_method_a_job_endpoint_does_not_have_is_a_405_in_the_error_shape(template):
    client = api_client(scopes=["jobs:read"])
    for path in ("/api/v1/jobs", "/api/v1/jobs/1", "/api/v1/jobs/1/cancel"):
        answer = client.put(path, {}, format="json")
        assert answer.status_code == 405, path
        assert answer.json()["errors"][0]["code"] == "method_not_allowed"
