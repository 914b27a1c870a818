"""The flushers' reads stay one index lookup per id on tables the planner knows nothing about
(infra.db.pg_lookup): a new campaign's notifications and events are written faster than
autovacuum analyzes them, and a plan chosen on "about one row" scanned them all per batch."""

import pytest
from django.db import transaction

from campaigns.models import Notification
from infra.db import pg_lookup_sql, pg_rows
from tests.conftest import plan_nodes, unanalyzed_campaign
from tests.factories import EventFactory
from tracking.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def clicked():
    """3,000 notifications of a new campaign, each clicked once, none of it analyzed."""
    notifications = unanalyzed_campaign(3_000, status="sent")
    Event.objects.bulk_create(
        EventFactory.build(notification=n, clicked=True) for n in notifications
    )
    return [n.pk for n in notifications]


def _plan(sql: str, params: list) -> list[dict]:
    with transaction.atomic():
        ((plan,),) = pg_rows(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
    return plan_nodes(plan[0]["Plan"])


@pytest.mark.parametrize(
    ("table", "key", "where", "params", "index"),
    [
        (
            Event._meta.db_table, "notification_id",
            "t.type = ANY(%b::text[]) AND t.source = %b", [["clicked"], "tracking"],
            Event._meta.indexes[0].name,
        ),
        (Notification._meta.db_table, "id", "", [], f"{Notification._meta.db_table}_pkey"),
    ],
    ids=["a batch's prior clicks", "a batch's notifications"],
)  # fmt: skip
def test_a_batch_reads_by_index_one_id_at_a_time(clicked, table, key, where, params, index):
    ids = clicked[1_000:1_500]
    sql = pg_lookup_sql(table=table, key=key, columns=["id"], where=where)
    nodes = _plan(sql, [ids, *params])
    (scan,) = [node for node in nodes if node.get("Relation Name") == table]
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan")
    assert scan["Index Name"] == index
    assert scan["Actual Loops"] == 500  # one lookup per id…
    assert scan["Actual Rows"] == 1  # …finding its own row (per loop), nothing else read
    assert not any("Hash" in node["Node Type"] for node in nodes)
    assert len(pg_rows(sql, [ids, *params])) == 500
