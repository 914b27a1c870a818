"""PostgreSQL statements with binary parameters, for the flushers' bulk reads and writes."""

from collections.abc import Iterable, Sequence

import psycopg
from django.contrib.postgres.indexes import BrinIndex, GinIndex
from django.db import connection, migrations, models


def pg_rows(sql: str, params: list) -> list[tuple]:
    """Run `sql` on PostgreSQL in the current transaction with binary parameters (%b): Django's
    cursor binds client-side, quoting arrays element by element in Python and splitting a long
    VALUES list with a regular expression every time; psycopg's binary array dumpers cost a
    fraction of that (docs/PERFORMANCE.md)."""
    connection.ensure_connection()
    # Its errors as Django's cursor raises them (django.db.DataError, OperationalError…), so
    # the callers' `except DatabaseError` and Django's connection health checks see them.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def pg_execute(sql: str, params: list) -> int:
    """pg_rows for a statement that returns no rows: the number of rows it changed."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def pg_lookup(
    *, table: str, key: str, ids: Iterable[int], columns: Sequence[str], where: str = "",
    params: Sequence = (),
) -> list[tuple]:  # fmt: skip
    """The rows of `table` (alias `t`) whose `key` column is one of `ids` and that match
    `where` (SQL on `t`, with %b `params`), as tuples of `columns` (all our own names).

    One index lookup per id, whatever the planner believes of the table: a LATERAL subquery
    that OFFSET 0 keeps from being flattened into a join. As a join or a semi-join
    (`IN (SELECT unnest(…))`, `= ANY(…)`), the rows of a new campaign, not analyzed yet, were
    estimated at a handful and the planner scanned them all for each batch, or compared each
    with every id: growing with the square of the campaign's clicks (docs/PERFORMANCE.md);
    this way, the same cost at any size (tests/tracking/hits/test_flush_plans.py)."""
    sql = pg_lookup_sql(table=table, key=key, columns=columns, where=where)
    return pg_rows(sql, [sorted(set(ids)), *params])


def pg_lookup_sql(*, table: str, key: str, columns: Sequence[str], where: str = "") -> str:
    """pg_lookup's statement: its first parameter is the array of ids."""
    return (
        f"SELECT {', '.join('t.' + c for c in columns)} FROM unnest(%b::bigint[]) AS k(id) "  # noqa: S608 (our names)
        f"CROSS JOIN LATERAL (SELECT * FROM {table} AS t WHERE t.{key} = k.id"
        f"{' AND ' + where if where else ''} OFFSET 0) AS t"
    )


def delete_in_chunks(queryset, *, chunk: int) -> int:
    """Delete the rows of `queryset` `chunk` at a time (each delete a short statement and a short
    lock, however many piled up); returns how many. The filter is applied again to each chunk,
    so a row that stopped matching meanwhile stays."""
    deleted = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:chunk])
        if not ids:
            return deleted
        deleted += queryset.filter(pk__in=ids).delete()[0]


class BrinIndexPortable(BrinIndex):
    """A BRIN index on PostgreSQL (for a column that grows with the table, such as a creation
    time: a few pages for millions of rows, next to nothing per insert); a plain index on the
    demo's SQLite, which has no BRIN."""

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "postgresql":
            return models.Index.create_sql(self, model, schema_editor, using=using, **kwargs)
        return super().create_sql(model, schema_editor, using=using, **kwargs)


class JsonContainsIndexPortable(GinIndex):
    """A GIN index (jsonb_path_ops) on PostgreSQL for one JSON column, serving its containment
    lookups (`column @> '{"city": "Paris"}'`, Django's `__contains`): smaller and faster than
    the default jsonb_ops, which also serves key-existence operators no query here uses. A
    plain index on the demo's SQLite, which has no GIN (there it serves nothing: SQLite has no
    containment operator, and its callers query another way; as BrinIndexPortable, the one
    index definition for both databases)."""

    def __init__(self, *, field: str, name: str) -> None:
        super().__init__(fields=[field], name=name, opclasses=["jsonb_path_ops"])

    def deconstruct(self):
        path, _, kwargs = super().deconstruct()
        return path, (), {"field": kwargs["fields"][0], "name": kwargs["name"]}

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "postgresql":
            plain = models.Index(fields=self.fields, name=self.name)
            return plain.create_sql(model, schema_editor, using=using, **kwargs)
        return super().create_sql(model, schema_editor, using=using, **kwargs)


class AddIndexOnline(migrations.AddIndex):
    """AddIndex that, on PostgreSQL, builds the index CONCURRENTLY: a plain CREATE INDEX
    holds a lock that blocks every insert into the table while it reads all of it (on a large
    event table, minutes without event intake). Needs the migration's `atomic = False`."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)
        return None

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)
        return None
