"""The one shape of a problem with a request, or with one row of a bulk request:
{"code", "field", "message"}, plus "row" (1-based) for a row and what else an error names
(a template's `line`). Every 4xx answer lists them (campaigns.api.errors, docs/API.md); a
job keeps its rows' in the database.
"""

# A message or field may echo what the client sent (a key it gave, a time zone it named). A
# NUL there becomes U+FFFD: PostgreSQL stores no NUL in jsonb, where an answer is kept for
# its Idempotency-Key's replay and a job keeps its row errors, and a 500 would be the answer.
_NUL = "\x00"
_REPLACEMENT = "\ufffd"


def problem(code: str, message: str, field: str = "", row: int | None = None, **extra) -> dict:
    found = {
        "code": code,
        "field": field.replace(_NUL, _REPLACEMENT),
        "message": message.replace(_NUL, _REPLACEMENT),
        **extra,
    }
    if row is not None:
        found["row"] = row
    return found
