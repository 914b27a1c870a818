"""The SES events of a test key's messages (campaigns.simulator), recorded by the one
recorder (ses_events_record) as SES's would be, so they move the ledger, count, and show in
the message's journey alike, with `source` simulated.

Each message gets SES's sequence for its address (campaigns.simulator.simulated_outcome):
Send, Delivery; Send, Bounce (hard); or Send, Delivery, Complaint, one millisecond apart so the
journey reads in order. Only rows of test-mode campaigns with a simulated message id get any:
a live message can never be given a made-up event.
"""

import logging
import uuid
from datetime import UTC, datetime, timedelta

from campaigns.models import Notification
from campaigns.simulator import (
    BOUNCED,
    COMPLAINED,
    SIMULATED_PREFIX,
    simulated_accepted_at,
    simulated_outcome,
)
from tracking.models import Event
from tracking.ses_events.parse import ses_events_parse
from tracking.ses_events.record import ses_events_record

logger = logging.getLogger(__name__)

STEP = timedelta(milliseconds=1)


def simulated_events_record(*, notification_ids: list[int]) -> dict[str, int]:
    """Record the simulated SES events of these test messages (the rows that are not test
    messages accepted by the simulator are ignored); the recorder's summary. Recording them
    again writes nothing (the events' content ids)."""
    rows = (
        Notification.objects.filter(
            pk__in=notification_ids,
            campaign__test_mode=True,
            message_id__startswith=SIMULATED_PREFIX,
        )
        .order_by("pk")
        .values_list("message_id", "contact__email")
    )
    events = []
    for message_id, email in rows:
        for payload in simulated_payloads(message_id=message_id, email=email):
            events.extend(ses_events_parse(payload=payload))
    summary = ses_events_record(events=events, source=Event.Source.SIMULATED, simulated=True)
    logger.info(
        "simulated ses events messages=%s recorded=%s", len(notification_ids), summary["recorded"]
    )
    return summary


def simulated_payloads(*, message_id: str, email: str) -> list[dict]:
    """The SES event objects (as SES publishes them) of one simulated message to `email`,
    timed from the moment its id says it was accepted: the same content every time, so
    recording them twice is a no-op."""
    at = simulated_accepted_at(message_id)
    mail = {
        "timestamp": _stamp(at),
        "messageId": message_id,
        "destination": [email],
        "tags": {"simulated": ["true"]},
    }
    outcome = simulated_outcome(email)
    payloads = [{"eventType": "Send", "mail": mail, "send": {}}]
    if outcome == BOUNCED:
        payloads.append(
            {
                "eventType": "Bounce",
                "mail": mail,
                "bounce": {
                    "bounceType": "Permanent",
                    "bounceSubType": "General",
                    "bouncedRecipients": [
                        {
                            "emailAddress": email,
                            "action": "failed",
                            "status": "5.1.1",
                            "diagnosticCode": "smtp; 550 5.1.1 user unknown (simulated)",
                        }
                    ],
                    "timestamp": _stamp(at + STEP),
                    "feedbackId": _feedback_id(message_id, "bounce"),
                },
            }
        )
        return payloads
    payloads.append(
        {
            "eventType": "Delivery",
            "mail": mail,
            "delivery": {
                "timestamp": _stamp(at + STEP),
                "recipients": [email],
                "processingTimeMillis": 1,
                "smtpResponse": "250 2.6.0 Message received (simulated)",
            },
        }
    )
    if outcome == COMPLAINED:
        payloads.append(
            {
                "eventType": "Complaint",
                "mail": mail,
                "complaint": {
                    "complainedRecipients": [{"emailAddress": email}],
                    "timestamp": _stamp(at + 2 * STEP),
                    "feedbackId": _feedback_id(message_id, "complaint"),
                    "complaintFeedbackType": "abuse",
                },
            }
        )
    return payloads


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _feedback_id(message_id: str, kind: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{message_id}/{kind}"))
