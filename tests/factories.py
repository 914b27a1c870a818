"""factory-boy factories for the tests' rows: contacts, lists, templates, campaigns, the ledger
(notifications), tracked links, events and SES events waiting for their message."""

import factory
from django.utils import timezone

from campaigns.counters import counters_add
from campaigns.models import (
    Campaign,
    CampaignLink,
    Contact,
    ContactList,
    Membership,
    Notification,
)
from templates_app.models import Template
from tracking.models import Event, PendingEspEvent


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    email = factory.Sequence(lambda n: f"person{n}@example.org")
    first_name = factory.Sequence(lambda n: f"Firstname{n}")
    last_name = "Lastname"
    attributes = factory.LazyFunction(dict)


class ContactListFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ContactList

    name = factory.Sequence(lambda n: f"List {n}")


class TemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Template

    name = factory.Sequence(lambda n: f"Template {n}")
    subject = 'Hello {{ first_name | default: "there" }}'
    html = (
        '<html><body><p>Hi {{ first_name | default: "there" }},</p>'
        '<p><a href="https://example.com/a">A</a> and <a href="https://example.com/b?x=1&amp;y=2">B</a>'
        "</p></body></html>"
    )
    text = 'Hi {{ first_name | default: "there" }}, see https://example.com/a'


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    template = factory.SubFactory(TemplateFactory)
    contact_list = factory.SubFactory(ContactListFactory)
    from_email = "News <news@example.com>"


class CampaignLinkFactory(factory.django.DjangoModelFactory):
    """A campaign's tracked link: pass `index` for a campaign's second and later links."""

    class Meta:
        model = CampaignLink

    campaign = factory.SubFactory(CampaignFactory)
    index = 0
    url = factory.LazyAttribute(lambda link: f"https://example.com/{link.index}")


class NotificationFactory(factory.django.DjangoModelFactory):
    """A ledger row: `created`, with no MessageId, unless told. `sent=True` is a row SES
    accepted (status `sent` and a MessageId of its own); other statuses are passed as they
    are, with whatever MessageId and reason the test needs."""

    class Meta:
        model = Notification

    campaign = factory.SubFactory(CampaignFactory)
    contact = factory.SubFactory(ContactFactory)

    class Params:
        sent = factory.Trait(
            status=Notification.Status.SENT,
            message_id=factory.Sequence(lambda n: f"message-{n}"),
        )


class EventFactory(factory.django.DjangoModelFactory):
    """Something that happened to a sent message, now unless told. The traits set the type
    and the source it comes from (our tracking views, or SES); verdicts, links and bounce
    types only where the test gives them, except `bounced` (a hard bounce)."""

    class Meta:
        model = Event

    notification = factory.SubFactory(NotificationFactory, sent=True)
    type = Event.Type.OPENED
    source = Event.Source.TRACKING
    occurred_at = factory.LazyFunction(timezone.now)

    class Params:
        opened = factory.Trait(type=Event.Type.OPENED, source=Event.Source.TRACKING)
        clicked = factory.Trait(type=Event.Type.CLICKED, source=Event.Source.TRACKING)
        delivered = factory.Trait(type=Event.Type.DELIVERED, source=Event.Source.SES)
        bounced = factory.Trait(
            type=Event.Type.BOUNCED, source=Event.Source.SES, bounce_type=Event.BounceType.HARD
        )


class PendingEspEventFactory(factory.django.DjangoModelFactory):
    """An SES event kept until its message is recorded, due for its next attempt now."""

    class Meta:
        model = PendingEspEvent

    esp_event_id = factory.Sequence(lambda n: f"pending-{n}")
    message_id = factory.Sequence(lambda n: f"unknown-{n}")
    source = Event.Source.SES
    payload = factory.LazyFunction(lambda: {"eventType": "Delivery"})
    next_attempt_at = factory.LazyFunction(timezone.now)


def list_with_contacts(n: int, **contact_kwargs) -> ContactList:
    contact_list = ContactListFactory()
    contacts = ContactFactory.create_batch(n, **contact_kwargs)
    Membership.objects.bulk_create(
        [Membership(contact_list=contact_list, contact=c) for c in contacts]
    )
    return contact_list


def sent_campaign(recipients: int = 1000, links: int = 2) -> Campaign:
    """A sent campaign to `recipients` with `links` tracked links (https://example.com/<index>),
    no counter yet."""
    campaign = CampaignFactory(status=Campaign.Status.SENT, recipient_count=recipients)
    for index in range(links):
        CampaignLinkFactory(campaign=campaign, index=index, url=f"https://example.com/{index}")
    return campaign


# A sent campaign's counters as a realistic run of 1,000 recipients leaves them: deliveries,
# bounces, opens and clicks (all and human), per link and per hour.
REPORT_COUNTERS = {
    "sent": 900, "failed": 10, "unknown": 5, "skipped": 25,
    "delivered": 800, "bounced_hard": 30, "bounced_soft": 20, "complained": 2, "rejected": 1,
    "delayed": 7, "rendering_failed": 0,
    "opens": 700, "unique_opens": 400, "human_opens": 300, "unique_human_opens": 200,
    "clicks": 150, "unique_clicks": 100, "human_clicks": 90, "unique_human_clicks": 50,
    "unsubscribed": 8,
    "link:0:clicks": 120, "link:0:unique_clicks": 80, "link:0:human_clicks": 70,
    "link:1:clicks": 30, "link:1:unique_clicks": 25, "link:1:human_clicks": 20,
    "opens@2026-03-01T09": 500, "human_opens@2026-03-01T09": 200,
    "opens@2026-03-01T12": 200, "human_opens@2026-03-01T12": 100,
    "clicks@2026-03-01T10": 150, "human_clicks@2026-03-01T10": 90,
}  # fmt: skip


def campaign_with_opens_and_clicks(**counters: int) -> Campaign:
    """sent_campaign() with REPORT_COUNTERS (`counters` replace some of them): what a report
    test reads."""
    campaign = sent_campaign()
    counters_add(campaign_id=campaign.pk, deltas={**REPORT_COUNTERS, **counters})
    return campaign
