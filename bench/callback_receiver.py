"""The callbacks benchmark's receiver: a WSGI app (run by granian) that checks each POST's
signature as docs/API.md's snippet does and counts, in Redis, posts, distinct event ids (with
the time each was first received, for the end-to-end lag) and bad signatures. A bad signature
is answered 401 (so it would never count as delivered)."""

import hashlib
import hmac
import os
import time

import redis

SECRET = os.environ["BENCH_CALLBACK_SECRET"].encode()
PREFIX = os.environ["BENCH_CALLBACK_KEY"]
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])


def _signed(header: str, body: bytes) -> bool:
    pairs = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for key, value in pairs if key == "t"]
    if len(stamps) != 1:
        return False
    expected = hmac.new(SECRET, stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for key, v in pairs if key == "v1")


def application(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    ok = _signed(environ.get("HTTP_MAILWRIGHT_SIGNATURE", ""), body)
    pipe = _redis.pipeline(transaction=False)
    pipe.incr(f"{PREFIX}:posts")
    if ok:
        # The first arrival's wall-clock time per event id (HSETNX: a redelivery keeps it);
        # the hash's size is the distinct ids received.
        pipe.hsetnx(f"{PREFIX}:ids", environ.get("HTTP_MAILWRIGHT_EVENT_ID", ""), time.time())
    else:
        pipe.incr(f"{PREFIX}:bad")
    pipe.execute()
    start_response("200 OK" if ok else "401 Unauthorized", [("Content-Length", "0")])
    return [b""]
