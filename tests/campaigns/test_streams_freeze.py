"""The campaign freeze and transactional streams (campaigns.transactional)."""

import pytest

from campaigns import services
from campaigns.models import Campaign
from tests.factories import TemplateFactory

pytestmark = pytest.mark.django_db


def test_a_transactional_stream_is_never_frozen():
    """The sweeper's stalled-freeze check sees a stream (sending, never frozen) as stalled:
    the freeze must leave it sending, never finish it."""
    stream = Campaign.objects.create(
        kind=Campaign.Kind.TRANSACTIONAL, name="s", template=TemplateFactory(), status="sending"
    )
    assert services.campaign_freeze(campaign_id=stream.pk) == 0
    stream.refresh_from_db()
    assert stream.status == "sending" and stream.frozen_at is None
