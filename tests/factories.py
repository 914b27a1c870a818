import factory

from campaigns.models import Campaign, Contact, ContactList, Membership
from templates_app.models import Template


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


def list_with_contacts(n: int, **contact_kwargs) -> ContactList:
    contact_list = ContactListFactory()
    contacts = ContactFactory.create_batch(n, **contact_kwargs)
    Membership.objects.bulk_create(
        [Membership(contact_list=contact_list, contact=c) for c in contacts]
    )
    return contact_list
