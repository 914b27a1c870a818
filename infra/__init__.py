"""Infrastructure the apps share (database helpers, the Redis client, the leased queue, task
enqueueing, the WSGI fast path). It imports no app."""
