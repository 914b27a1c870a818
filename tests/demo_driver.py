"""The steps of tests/e2e/test_demo_defaults.py that run inside the demo's Django: the demo's own
settings (config.settings on its embedded defaults), never the tests' (PostgreSQL, Redis).

    python -m tests.demo_driver send N TIMEOUT   # N contacts in a list, a campaign sent to them
    python -m tests.demo_driver report ID        # the campaign's report
    python -m tests.demo_driver api_key          # a template with a slug and a live API key
    python -m tests.demo_driver message ID       # an API message's status and its request

Each prints one JSON object on its last line of output.
"""

import json
import sys
import time

import django


def send(recipients: int, timeout: float) -> dict:
    """A list of `recipients` contacts, the demo's template and a campaign, sent with the
    admin's Send now; waits (up to `timeout` seconds) until the campaign leaves `sending`."""
    from django.conf import settings
    from django.db import connection, transaction

    from campaigns.management.commands.demo_setup import DEMO_HTML, DEMO_TEXT
    from campaigns.models import Campaign, Contact, ContactList
    from campaigns.services import campaign_send_now, contact_list_add
    from templates_app.models import Template

    with transaction.atomic():
        contact_list = ContactList.objects.create(name="End-to-end readers")
        contacts = Contact.objects.bulk_create(
            Contact(email=f"e2e{i:04d}@example.com", first_name=f"Reader{i}", attributes={})
            for i in range(recipients)
        )
        contact_list_add(contact_list=contact_list, contact_ids=[c.pk for c in contacts])
        template = Template.objects.create(
            name="End-to-end newsletter", subject="Hello {{ first_name }}", html=DEMO_HTML,
            text=DEMO_TEXT,
        )  # fmt: skip
        campaign = Campaign.objects.create(
            name="End-to-end", template=template, contact_list=contact_list,
            from_email=settings.DEFAULT_FROM_EMAIL,
        )  # fmt: skip
    campaign_send_now(campaign=campaign)
    deadline = time.monotonic() + timeout
    while True:
        campaign.refresh_from_db()
        if campaign.status not in (Campaign.Status.SCHEDULED, Campaign.Status.SENDING):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {
        "campaign_id": campaign.pk,
        "status": campaign.status,
        "database": connection.vendor,
        "broker": settings.CELERY_BROKER_URL,
    }


def report(campaign_id: int) -> dict:
    from tracking.reports.report import PLAIN_COUNTERS, campaign_report

    found = campaign_report(campaign_id=campaign_id)
    return {
        "status": found.status,
        "recipients": found.recipients,
        **{name: getattr(found, name) for name in PLAIN_COUNTERS},
        "links": [(link.url, link.clicks) for link in found.links],
    }


def api_key() -> dict:
    """A template the API can name (slug `demo-receipt`) and a live key to send and read."""
    from campaigns.apikeys import api_key_create
    from templates_app.models import Template

    Template.objects.create(
        name="Receipt", slug="demo-receipt", subject="Order {{ order }}",
        html="<p>Hello {{ first_name }}, order {{ order }} is on its way.</p>",
    )  # fmt: skip
    issued = api_key_create(name="demo", scopes=["messages:send", "messages:read"])
    return {"secret": issued.secret}


def message(message_id: int) -> dict:
    """An API message as its rows hold it (the ledger row and its request)."""
    from django.db import connection

    from campaigns.models import MessageRequest

    found = MessageRequest.objects.select_related("notification__contact").get(pk=message_id)
    return {
        "status": found.notification.status,
        "email": found.notification.contact.email,
        "repeat_key": found.notification.repeat_key,
        "reference": found.reference,
        "personalisation": found.personalisation,
        "created_at": found.created_at.isoformat(),
        "database": connection.vendor,
    }


def main(argv: list[str]) -> int:
    django.setup()
    step, *args = argv
    if step == "send":
        result = send(int(args[0]), float(args[1]))
    elif step == "report":
        result = report(int(args[0]))
    elif step == "api_key":
        result = api_key()
    elif step == "message":
        result = message(int(args[0]))
    else:
        raise SystemExit(f"unknown step {step!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
