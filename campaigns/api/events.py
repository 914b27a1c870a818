"""GET /api/v1/events (scope messages:read, docs/API.md#events): what happened to the
messages, newest first — SES's events (delivered, bounced, complained…), opens and clicks with
the human/machine verdict, unsubscribes.

Which events: those of every kind of send — campaigns as well as the API's transactional
messages and jobs — since an integrator does over the API what a marketer does in the admin,
and a marketer reads a campaign's events (filter by `campaign`). A key reads the events of its
own mode (a test key its test sends', a live key the live ones'); a staff session all.
"""

from drf_spectacular.utils import OpenApiExample, extend_schema

from campaigns.api.base import ApiView
from campaigns.api.pagination import CursorPage
from campaigns.api.schema import paginated
from campaigns.api.serializers import (
    EventListQuerySerializer,
    EventSerializer,
)
from campaigns.models import ApiKey
from tracking.models import Event
from tracking.reports.journeys import event_steps, events_of

# The schema's example: a page of two events of one message, newest first (the shape of
# GET /api/v1/messages/{id}'s events).
_EVENT = {
    "id": 90231,
    "at": "2026-12-05T10:07:45.210000Z",
    "type": "clicked",
    "source": "tracking",
    "detail": "link 0: https://example.com/order/17",
    "verdict": "human",
    "verdict_reason": "default",
    "message": 4711,
    "campaign": 52,
    "contact": 812,
}
_PAGE = {
    "results": [
        _EVENT,
        {
            **_EVENT,
            "id": 90210,
            "at": "2026-12-05T10:00:03Z",
            "type": "delivered",
            "source": "ses",
            "detail": "",
            "verdict": "",
            "verdict_reason": "",
        },
    ],
    "next": "https://mail.example.com/api/v1/events?message=4711&limit=2&cursor=aWQ6OTAyMTA",
}

# Event ids a page of GET /api/v1/events?type= reads at most (docs/API.md#events).
TYPE_WINDOW = 20_000


class EventList(ApiView):
    scopes = {"GET": "messages:read"}

    @extend_schema(
        operation_id="events_list",
        parameters=[EventListQuerySerializer],
        responses={200: paginated(EventSerializer)},
        examples=[OpenApiExample("A message's last two events", value=_PAGE, response_only=True)],
        description="Events of the key's mode's messages (campaigns', transactional and bulk "
        "jobs'), newest first, filtered (filters are and-ed); follow `next` until it is null.",
    )
    def get(self, request):
        query = EventListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        events = events_of(
            test_mode=request.auth.test if isinstance(request.auth, ApiKey) else None,
            campaign_id=filters.get("campaign"),
            contact_id=filters.get("contact"),
            notification_id=filters.get("message"),
            types=filters.get("type"),
            since=filters.get("since"),
        )
        # A type alone has no index (one on every event would cost each open and click its
        # upkeep): a page reads a bounded window of event ids, unless a message or a contact
        # narrows the events first (their indexes).
        narrowed = "message" in filters or "contact" in filters
        window = TYPE_WINDOW if filters.get("type") and not narrowed else None
        page = CursorPage(request, size=filters["limit"], window=window, newest=Event.objects.all())
        rows = page.rows(events)
        return page.answer(EventSerializer(event_steps(rows), many=True).data, rows)
