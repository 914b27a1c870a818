from django.db import migrations, models
from django.db.models import F


def mark_started_campaigns_frozen(apps, schema_editor):
    # Campaigns started before chunked freezing froze their audience in one transaction.
    Campaign = apps.get_model("campaigns", "Campaign")
    Campaign.objects.filter(started_at__isnull=False).update(frozen_at=F("started_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_membership_unsubscribed_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="frozen_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(mark_started_campaigns_frozen, migrations.RunPython.noop),
    ]
