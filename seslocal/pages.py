"""The HTML inspection pages (no JavaScript). Everything user-supplied is escaped; message
HTML is shown in a sandboxed ``<iframe srcdoc>`` so its scripts cannot run."""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}
pre{background:#f7f7f7;padding:.75rem;white-space:pre-wrap;word-break:break-word}
iframe{width:100%;height:32rem;border:1px solid #ccc}
.muted{color:#777}
"""


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    ).encode()


def _table(rows: list[tuple[str, str]]) -> str:
    """Two-column table; values must already be escaped."""
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def index_page(
    stats: dict[str, Any], messages: list[dict[str, Any]], faults: dict, config: dict
) -> bytes:
    counts = [
        (key, escape(str(stats[key])))
        for key in (
            "messages",
            "recipients",
            "distinct_recipients",
            "duplicate_recipients",
            "throttled",
            "errors_5xx",
            "templates",
        )
    ]
    calls = ", ".join(f"{escape(api)}: {n}" for api, n in sorted(stats["calls"].items()))
    counts.append(("calls", calls or "<span class='muted'>none</span>"))
    rows = []
    for m in messages:
        link = f"/_local/messages/{quote(m['message_id'])}"
        rows.append(
            "<tr>"
            f"<td>{escape(m['timestamp'])}</td>"
            f"<td>{escape(m['api'])}</td>"
            f"<td>{escape(m['template'] or '')}</td>"
            f"<td>{escape(', '.join(m['to'] + m['cc'] + m['bcc']))}</td>"
            f"<td><a href='{escape(link)}'>{escape(m['subject'] or '(no subject)')}</a></td>"
            "</tr>"
        )
    listing = (
        "<table><tr><th>Time (UTC)</th><th>API</th><th>Template</th><th>Recipients</th>"
        "<th>Subject</th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p class='muted'>No messages yet.</p>"
    )
    body = (
        "<h1>seslocal</h1>"
        "<p class='muted'>Local Amazon SES v2 endpoint. JSON: "
        "<a href='/_local/stats'>/_local/stats</a>, "
        "<a href='/_local/messages?limit=20'>/_local/messages</a>, "
        "<a href='/_local/faults'>/_local/faults</a>, "
        "<a href='/_local/config'>/_local/config</a></p>"
        f"<h2>Counts</h2>{_table(counts)}"
        f"<h2>Settings</h2>{_table([(k, escape(json.dumps(v))) for k, v in config.items()])}"
        f"<h2>Faults</h2>{_table([(k, escape(json.dumps(v))) for k, v in faults.items()])}"
        f"<h2>Latest {len(messages)} messages</h2>{listing}"
    )
    return _page("seslocal", body)


def message_page(message: dict[str, Any], raw: bytes | None, bodies_stored: bool = True) -> bytes:
    mid = message["message_id"]
    meta = [
        ("Message ID", escape(mid)),
        ("Time (UTC)", escape(message["timestamp"])),
        ("API", escape(message["api"])),
        ("Template", escape(message["template"] or "")),
        ("From", escape(message["from"])),
        ("To", escape(", ".join(message["to"]))),
        ("Cc", escape(", ".join(message["cc"]))),
        ("Bcc", escape(", ".join(message["bcc"]))),
        ("Reply-To", escape(", ".join(message["reply_to"]))),
        ("Subject", escape(message["subject"])),
        ("Configuration set", escape(message["configuration_set"] or "")),
        ("Tags", escape(", ".join(f"{t['name']}={t['value']}" for t in message["tags"]))),
    ]
    headers = [(h["name"], escape(h["value"])) for h in message["headers"]]
    quoted = quote(mid)
    parts = [
        "<p><a href='/'>&larr; all messages</a> &middot; "
        f"<a href='/_local/messages/{quoted}.json'>JSON</a>"
        + (f" &middot; <a href='/_local/messages/{quoted}.eml'>raw .eml</a>" if raw else "")
        + "</p>",
        f"<h1>{escape(message['subject'] or '(no subject)')}</h1>",
        _table(meta),
        "<h2>Headers</h2>",
        _table(headers) if headers else "<p class='muted'>No extra headers.</p>",
    ]
    if not bodies_stored and message.get("text") is None and message.get("html") is None:
        parts.append("<p class='muted'>Bodies are not stored (--no-bodies).</p>")
    else:
        if message.get("text") is not None:
            parts.append(f"<h2>Text</h2><pre>{escape(message['text'])}</pre>")
        if message.get("html") is not None:
            # sandbox="" : no scripts, no forms, no same-origin access.
            parts.append(
                "<h2>HTML</h2>"
                f"<iframe sandbox='' srcdoc=\"{escape(message['html'], quote=True)}\"></iframe>"
            )
        if message.get("text") is None and message.get("html") is None:
            parts.append("<p class='muted'>No body stored.</p>")
    return _page(f"seslocal: {message['subject']}", "".join(parts))
