"""Create the demo's admin account and data (idempotent): ~1,000 contacts in a list, a
template with personalization and links, and a draft campaign."""

import random
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from campaigns.models import Campaign, Contact, ContactList
from campaigns.services import contact_list_add
from templates_app.models import Template

FIRST = ["Ada", "Grace", "Alan", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", ""]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie"]
CITIES = ["Leeds", "Lyon", "Lisbon", "Lagos", "Lima", ""]
# One reader in a hundred has an address the local SES endpoint hard-bounces (seslocal/events.py):
# the demo's report shows bounces as well as deliveries. 1% stays far below the circuit
# breaker's 5%.
BOUNCE_TAG = "+bounce"

DEMO_HTML = """<!doctype html>
<html><body style="font-family: sans-serif">
<h1>Hi {{ first_name | default: "there" }}!</h1>
{% if city %}<p>News for readers in {{ city }}.</p>
{% else %}<p>News for all our readers.</p>{% endif %}
<p>Our spring collection is here. <a href="https://example.com/spring?utm_source=demo">See it</a>
or read <a href="https://example.com/blog">the blog</a>.</p>
</body></html>
"""
DEMO_TEXT = """Hi {{ first_name | default: "there" }}!
Our spring collection is here: https://example.com/spring?utm_source=demo
"""


class Command(BaseCommand):
    help = "Create the demo admin account and demo data (safe to run again)."

    def handle(self, *args, **options):
        password = self._admin_password()
        with transaction.atomic():
            self._demo_data()
        self.stdout.write(
            "\n  Mailwright demo: http://127.0.0.1:8000/admin/  (user: admin, password: "
            f"{password})\n  Local SES endpoint (what was sent): http://127.0.0.1:8025/\n"
        )

    def _admin_password(self) -> str:
        path = settings.VAR_DIR / "demo-admin-password.txt"
        user_model = get_user_model()
        if path.exists() and user_model.objects.filter(username="admin").exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(9)
        user, _ = user_model.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password

    def _demo_data(self) -> None:
        contact_list, created = ContactList.objects.get_or_create(
            name="Demo subscribers",
            defaults={"description": "1,000 made-up contacts (ten of them bounce)."},
        )
        if created:
            rng = random.Random(42)  # the same demo every time
            contacts = Contact.objects.bulk_create(
                [
                    Contact(
                        email=f"reader{i:04d}{BOUNCE_TAG if i % 100 == 37 else ''}@example.com",
                        first_name=rng.choice(FIRST),
                        last_name=rng.choice(LAST),
                        attributes={"city": rng.choice(CITIES)},
                    )
                    for i in range(1000)
                ],
                ignore_conflicts=True,
            )
            ids = Contact.objects.filter(email__in=[c.email for c in contacts]).values_list(
                "id", flat=True
            )
            contact_list_add(contact_list=contact_list, contact_ids=ids)
        template, _ = Template.objects.get_or_create(
            name="Spring newsletter",
            defaults={
                "subject": 'Spring is here, {{ first_name | default: "friend" }}',
                "html": DEMO_HTML,
                "text": DEMO_TEXT,
            },
        )
        Campaign.objects.get_or_create(
            name="Spring newsletter (demo)",
            defaults={
                "template": template,
                "contact_list": contact_list,
                "from_email": settings.DEFAULT_FROM_EMAIL,
            },
        )
