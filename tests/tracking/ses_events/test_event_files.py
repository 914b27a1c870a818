"""`manage.py import_ses_events PATH`: SES event files (as Kinesis Firehose writes them to S3)."""

import gzip
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from campaigns.models import CampaignCounter, Contact, Notification
from tests.factories import CampaignFactory, NotificationFactory
from tests.sns_signing import ses_sample
from tests.tracking.ses_events.test_webhooks import post, sns_envelope
from tracking.models import Event, PendingEspEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent():
    """Three sent notifications of one campaign, message ids m0..m2."""
    campaign = CampaignFactory()
    return [NotificationFactory(campaign=campaign, sent=True, message_id=f"m{i}") for i in range(3)]


def record(sample: str, row: Notification, **kwargs) -> dict:
    return ses_sample(sample, message_id=row.message_id, recipient=row.contact.email, **kwargs)


def lines(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def run(path) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_ses_events", str(path), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def state() -> dict:
    return {
        "events": sorted(Event.objects.values_list("esp_event_id", "type", "source")),
        "pending": sorted(PendingEspEvent.objects.values_list("esp_event_id", flat=True)),
        "counters": sorted(CampaignCounter.objects.values_list("name", "value")),
        "statuses": sorted(Notification.objects.values_list("id", "status")),
    }


def test_folder_with_gzip_and_single_object_files_imported_once(tmp_path, sent):
    (tmp_path / "2026/11/20").mkdir(parents=True)
    (tmp_path / "2026/11/20/ses-events-1-2026-11-20-10-00-00-abc").write_bytes(
        lines(record("delivery", sent[0]), record("open", sent[0]), record("bounce", sent[1]))
    )
    with gzip.open(tmp_path / "2026/11/20/ses-events-1-2026-11-20-11-00-00-def.gz", "wb") as f:
        f.write(lines(record("complaint", sent[2]), record("delivery_delay", sent[2])))
    # One pretty-printed JSON object for the whole file.
    (tmp_path / "single.json").write_text(json.dumps(record("delivery", sent[2]), indent=2))
    (tmp_path / ".hidden").write_text("not an event file")

    out, err = run(tmp_path)

    assert err == ""
    assert "ses-events-1-2026-11-20-10-00-00-abc: 3 events, 3 recorded" in out
    assert "ses-events-1-2026-11-20-11-00-00-def.gz: 2 events, 2 recorded" in out
    assert "single.json: 1 events, 1 recorded" in out
    assert "total: 3 files, 6 events, 6 recorded, 0 already recorded, 0 pending" in out
    assert set(Event.objects.values_list("source", flat=True)) == {"ses_file"}
    assert sorted(Event.objects.values_list("type", flat=True)) == [
        "bounced", "complained", "deferred", "delivered", "delivered", "opened",
    ]  # fmt: skip
    statuses = dict(Notification.objects.values_list("message_id", "status"))
    assert statuses == {"m0": "delivered", "m1": "bounced", "m2": "complained"}
    assert Contact.objects.get(pk=sent[1].contact_id).status == "bounced"
    first = state()
    # single.json's delivery of m2 came after its complaint: recorded, counted nowhere.
    assert dict(first["counters"]) == {
        "bounced_hard": 1, "complained": 1, "delayed": 1, "delivered": 1,
    }  # fmt: skip

    # Run twice: the same rows and counts.
    out, err = run(tmp_path)
    assert "total: 3 files, 6 events, 0 recorded, 6 already recorded, 0 pending" in out
    assert state() == first


def test_malformed_lines_are_reported_with_their_numbers_and_the_rest_imported(tmp_path, sent):
    path = tmp_path / "events"
    no_message_id = {"eventType": "Delivery", "delivery": {"recipients": ["a@example.org"]}}
    path.write_bytes(
        lines(record("delivery", sent[0]))
        + b'{"eventType": "Delivery", "mail": \n'  # line 2: cut short
        + lines(record("delivery", sent[1]))
        + json.dumps(no_message_id).encode()  # line 4: valid JSON, not an SES event
        + b"\n\n"  # line 5: blank, ignored
        + b"\xff\xfe garbage\n"  # line 6: not UTF-8
        + lines(record("delivery", sent[2]))
    )

    with pytest.raises(CommandError, match="3 malformed lines or unreadable files"):
        run(path)

    assert Event.objects.count() == 3


def test_malformed_lines_are_listed_on_stderr(tmp_path, sent):
    path = tmp_path / "events"
    path.write_bytes(lines(record("delivery", sent[0])) + b"{oops\n")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_ses_events", str(path), stdout=out, stderr=err)
    assert f"{path}:2: malformed, skipped: invalid JSON" in err.getvalue()
    assert f"{path}: 1 events, 1 recorded, 0 already recorded, 0 pending" in out.getvalue()
    assert "1 malformed lines" in out.getvalue()


def test_several_objects_on_one_line_are_all_read(tmp_path, sent):
    # Firehose concatenates records as they come; back to back on one line is read too.
    path = tmp_path / "events"
    path.write_bytes(
        json.dumps(record("delivery", sent[0])).encode()
        + json.dumps(record("delivery", sent[1])).encode()
    )
    out, _ = run(path)
    assert "2 events, 2 recorded" in out


def test_a_file_counts_a_message_once_and_only_for_recipients_on_it(tmp_path, sent):
    """A complaint for m0 also naming m1's recipient and a stranger; m1 delivered twice (two
    distinct events); a bounce for m2 naming only people its message was not sent to."""
    complaint = record("complaint", sent[0])
    complaint["complaint"]["complainedRecipients"] = [
        {"emailAddress": a}
        for a in (sent[1].contact.email, "stranger@example.org", sent[0].contact.email)
    ]
    bounce = record("bounce", sent[2])
    bounce["bounce"]["bouncedRecipients"] = [{"emailAddress": sent[1].contact.email}]
    path = tmp_path / "events"
    path.write_bytes(
        lines(
            complaint,
            record("delivery", sent[1]),
            record("delivery", sent[1], timestamp="2026-11-20T11:00:00.000Z"),
            bounce,
        )
    )
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 malformed lines"):
        call_command("import_ses_events", str(path), stdout=out, stderr=err)
    assert f"{path}:4: malformed, skipped: no recipient of the event is on its message" in (
        err.getvalue()
    )
    assert "3 events, 3 recorded" in out.getvalue()
    assert dict(CampaignCounter.objects.values_list("name", "value")) == {
        "complained": 1, "delivered": 1,
    }  # fmt: skip
    statuses = dict(Notification.objects.values_list("message_id", "status"))
    assert statuses == {"m0": "complained", "m1": "delivered", "m2": "sent"}
    assert [c.status for c in Contact.objects.filter(pk__in=[r.contact_id for r in sent])
            .order_by("pk")] == ["complained", "active", "active"]  # fmt: skip


def test_the_same_event_by_sns_and_from_a_file_is_recorded_once(client, tmp_path, sent):
    bounce, delivery = record("bounce", sent[0]), record("delivery", sent[1])
    assert post(client, sns_envelope(bounce)).status_code == 200  # SNS first
    path = tmp_path / "events"
    path.write_bytes(lines(bounce, delivery))
    out, _ = run(path)
    assert "2 events, 1 recorded, 1 already recorded" in out
    assert post(client, sns_envelope(delivery)).status_code == 200  # the file first
    assert sorted(Event.objects.values_list("source", flat=True)) == ["ses", "ses_file"]
    assert dict(CampaignCounter.objects.values_list("name", "value")) == {
        "bounced_hard": 1, "delivered": 1,
    }  # fmt: skip


def test_events_for_unknown_messages_go_pending_then_are_recorded_by_the_retry(tmp_path, sent):
    from tracking.ses_events.retry import esp_events_retry_pending

    Notification.objects.filter(pk=sent[0].pk).update(message_id=None)
    path = tmp_path / "events"
    path.write_bytes(lines(record("delivery", sent[0]), record("delivery", sent[1])))
    out, _ = run(path)
    assert "2 events, 1 recorded, 0 already recorded, 1 pending" in out
    out, _ = run(path)  # again: still one pending row
    assert "2 events, 0 recorded, 1 already recorded, 1 pending" in out
    pending = PendingEspEvent.objects.get()
    assert (pending.source, pending.message_id) == ("ses_file", "m0")

    Notification.objects.filter(pk=sent[0].pk).update(message_id="m0")
    PendingEspEvent.objects.update(next_attempt_at=timezone.now())
    assert esp_events_retry_pending().recorded == 1
    event = Event.objects.get(notification=sent[0])
    assert (event.type, event.source) == ("delivered", "ses_file")
    assert not PendingEspEvent.objects.exists()


def test_an_unreadable_file_is_reported_and_the_others_imported(tmp_path, sent):
    (tmp_path / "a.gz").write_bytes(gzip.compress(lines(record("delivery", sent[0])))[:-12])
    (tmp_path / "b").write_bytes(lines(record("delivery", sent[1])))
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_ses_events", str(tmp_path), stdout=out, stderr=err)
    assert f"{tmp_path / 'a.gz'}: not read: " in err.getvalue()
    assert Event.objects.filter(notification=sent[1]).exists()


def test_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="no such file or folder"):
        run(tmp_path / "nope")
