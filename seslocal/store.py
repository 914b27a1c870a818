"""SQLite storage for templates, accepted messages and counters.

One connection guarded by a lock: SQLite has a single writer anyway, the HTTP threads
mostly render outside the lock, and it also works for ``:memory:`` (where a connection
per thread would mean a database per thread). Each send call is one transaction with
``executemany`` inserts; WAL mode with ``synchronous=OFF`` never fsyncs (the data is
disposable: an OS crash may lose it, a killed server does not).

The schema is small on purpose (it is on the hot path of the benchmark):

* ``messages``: one row per accepted message, bodies optional.
* ``recipients``: one row per recipient address (lower-cased addr-spec), clustered by
  message, indexed by address -- for duplicate detection and ``?to=`` lookups.
* ``?header=Name:Value`` reads the headers of ``messages`` (JSON, with SQLite's json_each):
  an index of every header (three rows per message) cost a third of a bulk call's writes,
  and a filter by header is asked for rarely (a test, the benchmark's final count).
* ``counters``: calls per API, throttled, errors_5xx.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from .messages import OutMessage

SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    name TEXT PRIMARY KEY,
    subject TEXT,
    text TEXT,
    html TEXT,
    created REAL NOT NULL,
    version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    api TEXT NOT NULL,
    template TEXT,
    from_addr TEXT NOT NULL,
    destination TEXT NOT NULL,
    reply_to TEXT NOT NULL,
    subject TEXT NOT NULL,
    headers TEXT NOT NULL,
    tags TEXT NOT NULL,
    config_set TEXT,
    recipient_count INTEGER NOT NULL,
    text_body TEXT,
    html_body TEXT,
    raw BLOB
);
CREATE INDEX IF NOT EXISTS messages_created ON messages(created);
CREATE TABLE IF NOT EXISTS recipients (
    message INTEGER NOT NULL,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (message, kind, address)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_address ON recipients(address);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
"""


def _encode(value: Any) -> str:
    """Compact JSON, UTF-8 as is (orjson: ~10x json's encoder on these small values)."""
    return orjson.dumps(value).decode()


# A message carrying the header (lower-cased name, value): its headers are [[name, value], …].
_HAS_HEADER = (
    "EXISTS (SELECT 1 FROM json_each(messages.headers) AS h "
    "WHERE lower(h.value ->> 0) = ? AND h.value ->> 1 = ?)"
)

_MESSAGE_COLUMNS = (
    "id, message_id, created, api, template, from_addr, destination, reply_to, subject, "
    "headers, tags, config_set, recipient_count"
)


def iso_time(stamp: float) -> str:
    return (
        datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def split_header_filter(spec: str) -> tuple[str, str]:
    """``"X-Campaign:42"`` -> ``("x-campaign", "42")``; raises ``ValueError``."""
    name, sep, value = spec.partition(":")
    if not sep or not name.strip():
        raise ValueError("header filter must look like Name:Value")
    return name.strip().lower(), value.strip()


class Store:
    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        if path != ":memory:" and not path.startswith("file:"):
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, uri=path.startswith("file:")
        )
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=OFF")  # disposable data: no fsync at all
            self._conn.execute("PRAGMA temp_store=MEMORY")
            self._conn.execute("PRAGMA cache_size=-65536")
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- counters --------------------------------------------------------------------

    _BUMP = (
        "INSERT INTO counters(name, n) VALUES(?, ?) "
        "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n"
    )

    def bump(self, *names: str) -> None:
        with self._lock:
            self._conn.executemany(self._BUMP, [(name, 1) for name in names])

    # --- templates -------------------------------------------------------------------

    def create_template(
        self, name: str, subject: str | None, text: str | None, html: str | None, version: str
    ) -> bool:
        """Insert a template; False if one with that name exists."""
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO templates(name, subject, text, html, created, version) "
                    "VALUES(?, ?, ?, ?, ?, ?)",
                    (name, subject, text, html, time.time(), version),
                )
            except sqlite3.IntegrityError:
                return False
            return True

    def update_template(
        self, name: str, subject: str | None, text: str | None, html: str | None, version: str
    ) -> bool:
        with self._lock:
            cur = self._conn.execute(
                "UPDATE templates SET subject = ?, text = ?, html = ?, version = ? WHERE name = ?",
                (subject, text, html, version, name),
            )
            return cur.rowcount > 0

    def delete_template(self, name: str) -> bool:
        with self._lock:
            return self._conn.execute("DELETE FROM templates WHERE name = ?", (name,)).rowcount > 0

    def get_template(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT name, subject, text, html, created, version FROM templates WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        keys = ("name", "subject", "text", "html", "created", "version")
        return dict(zip(keys, row, strict=True))

    def template_version(self, name: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT version FROM templates WHERE name = ?", (name,)
            ).fetchone()
        return row[0] if row else None

    def list_templates(self, after: str | None, limit: int) -> list[tuple[str, float]]:
        with self._lock:
            return self._conn.execute(
                "SELECT name, created FROM templates WHERE name > ? ORDER BY name LIMIT ?",
                (after or "", limit),
            ).fetchall()

    # --- messages --------------------------------------------------------------------

    def record(
        self, messages: list[OutMessage], counters: Iterable[str] = (), store_bodies: bool = True
    ) -> None:
        """Store the accepted messages of one call (and bump counters) in one transaction."""
        # Serialise outside the lock; message ids are assigned inside it.
        rows = []
        recipient_rows = []
        encoded: dict[int, str] = {}  # bulk entries share reply-to/tag lists: encode once

        def dumps(value: Any) -> str:
            key = id(value)
            if key not in encoded:
                encoded[key] = _encode(value)
            return encoded[key]

        for offset, m in enumerate(messages, start=1):
            r = m.recipients
            rows.append(
                (
                    offset,
                    m.message_id,
                    m.created,
                    m.api,
                    m.template,
                    m.from_addr,
                    _encode({"to": r.to, "cc": r.cc, "bcc": r.bcc}),
                    dumps(m.reply_to),
                    m.subject,
                    dumps(m.headers),
                    dumps(m.tags),
                    m.config_set,
                    len(r.addresses),
                    m.text if store_bodies else None,
                    m.html if store_bodies else None,
                    m.raw if store_bodies else None,
                )
            )
            recipient_rows.extend((offset, kind, address) for kind, address in r.addresses)
        counter_rows = [(name, 1) for name in counters]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                (last,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
                conn.executemany(
                    "INSERT INTO messages(id, message_id, created, api, template, from_addr, "
                    "destination, reply_to, subject, headers, tags, config_set, "
                    "recipient_count, text_body, html_body, raw) "
                    "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(last + row[0], *row[1:]) for row in rows],
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO recipients(message, kind, address) VALUES(?, ?, ?)",
                    [(last + o, kind, address) for o, kind, address in recipient_rows],
                )
                if counter_rows:
                    conn.executemany(self._BUMP, counter_rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def sent_last_24_hours(self) -> int:
        with self._lock:
            (n,) = self._conn.execute(
                "SELECT COALESCE(SUM(recipient_count), 0) FROM messages WHERE created >= ?",
                (time.time() - 86400,),
            ).fetchone()
        return n

    def _message_dict(self, row: tuple, recipients: list[str], bodies: tuple | None) -> dict:
        (
            _id,
            message_id,
            created,
            api,
            template,
            from_addr,
            destination,
            reply_to,
            subject,
            headers,
            tags,
            config_set,
            _count,
        ) = row
        dest = json.loads(destination)
        result: dict[str, Any] = {
            "message_id": message_id,
            "timestamp": iso_time(created),
            "api": api,
            "template": template,
            "from": from_addr,
            "reply_to": json.loads(reply_to),
            "to": dest["to"],
            "cc": dest["cc"],
            "bcc": dest["bcc"],
            "recipients": recipients,
            "subject": subject,
            "headers": [{"name": n, "value": v} for n, v in json.loads(headers)],
            "tags": [{"name": n, "value": v} for n, v in json.loads(tags)],
            "configuration_set": config_set,
        }
        if bodies is not None:
            result["text"], result["html"] = bodies[0], bodies[1]
            result["has_raw"] = bodies[2] is not None
        return result

    def list_messages(
        self,
        limit: int = 50,
        to: str | None = None,
        header: tuple[str, str] | None = None,
        bodies: bool = True,
    ) -> list[dict[str, Any]]:
        """Newest first, optionally only those to an address and/or carrying a header."""
        where, params = [], []
        if to:
            where.append("id IN (SELECT message FROM recipients WHERE address = ?)")
            params.append(to.strip().lower())
        if header:
            where.append(_HAS_HEADER)
            params.extend(header)
        columns = _MESSAGE_COLUMNS + (", text_body, html_body, raw IS NOT NULL" if bodies else "")
        sql = f"SELECT {columns} FROM messages"  # noqa: S608 - fixed fragments only
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
            recipients = self._recipients_of([row[0] for row in rows])
        out = []
        for row in rows:
            base, extra = row[:13], row[13:]
            body = (extra[0], extra[1], True if extra[2] else None) if bodies else None
            out.append(self._message_dict(base, recipients.get(row[0], []), body))
        return out

    def _recipients_of(self, ids: list[int]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        if not ids:
            return found
        marks = ",".join("?" * len(ids))
        for message, address in self._conn.execute(
            f"SELECT message, address FROM recipients WHERE message IN ({marks})",  # noqa: S608
            ids,
        ):
            found.setdefault(message, []).append(address)
        return found

    def get_message(self, message_id: str) -> tuple[dict[str, Any], bytes | None] | None:
        """One message with bodies, plus its raw MIME when stored."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_MESSAGE_COLUMNS}, text_body, html_body, raw "  # noqa: S608
                "FROM messages WHERE message_id = ?",
                (message_id,),
            ).fetchone()
            if row is None:
                return None
            recipients = self._recipients_of([row[0]])
        raw = row[15]
        return self._message_dict(row[:13], recipients.get(row[0], []), row[13:]), raw

    # --- stats -----------------------------------------------------------------------

    def stats(self, header: tuple[str, str] | None = None) -> dict[str, Any]:
        with self._lock:
            conn = self._conn
            counters = dict(conn.execute("SELECT name, n FROM counters").fetchall())
            scope = ""
            if header:
                # The messages with the header, found once (a JSON scan: ~1.3 s at 1M).
                conn.execute("DROP TABLE IF EXISTS temp.scope")
                conn.execute(
                    "CREATE TEMP TABLE scope AS "  # noqa: S608
                    f"SELECT id FROM messages WHERE {_HAS_HEADER}",
                    header,
                )
                (messages,) = conn.execute("SELECT COUNT(*) FROM temp.scope").fetchone()
                scope = "WHERE message IN (SELECT id FROM temp.scope)"
            else:
                (messages,) = conn.execute("SELECT COUNT(*) FROM messages").fetchone()
            recipients, distinct = conn.execute(
                f"SELECT COUNT(*), COUNT(DISTINCT address) FROM recipients {scope}"  # noqa: S608
            ).fetchone()
            (duplicates,) = conn.execute(
                "SELECT COUNT(*) FROM (SELECT address FROM recipients "  # noqa: S608
                f"{scope} GROUP BY address HAVING COUNT(*) > 1)"
            ).fetchone()
            if header:
                conn.execute("DROP TABLE temp.scope")
            (templates,) = conn.execute("SELECT COUNT(*) FROM templates").fetchone()
        calls = {
            name.removeprefix("call:"): n
            for name, n in counters.items()
            if name.startswith("call:")
        }
        return {
            "calls": calls,
            "messages": messages,
            "recipients": recipients,
            "distinct_recipients": distinct,
            "duplicate_recipients": duplicates,
            "duplicate_deliveries": recipients - distinct,
            "throttled": counters.get("throttled", 0),
            "errors_5xx": counters.get("errors_5xx", 0),
            "templates": templates,
        }

    def reset(self) -> None:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table in ("messages", "recipients", "counters", "templates"):
                    conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
