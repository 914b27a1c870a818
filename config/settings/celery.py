"""Celery: broker, queues, routing and the beat schedule."""

from datetime import timedelta

from kombu import Queue

from config.env import VAR_DIR, env_int, env_str

# Embedded default: kombu's file-system transport needs no server, so `make demo` runs with
# nothing installed. It polls a folder (one process per machine, no visibility timeout): fine
# for a demo, not for production, where CELERY_BROKER_URL=redis://… is set.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis re-delivers an unacknowledged message after this many seconds. It must exceed
        # the longest task plus any countdown, or a slow task runs twice: 1 hour is far above
        # a batch (seconds) and the longest retry backoff (10 minutes).
        "visibility_timeout": 3600,
    }

# Redis for state all workers share (the SES send-rate limit). Empty: CELERY_BROKER_URL if it
# is redis://…, else each process paces itself alone (the demo, which has no Redis).
REDIS_URL = env_str("REDIS_URL", "")

# Results are never read: tasks report through the database.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"

# Queues: campaigns never starve transactional mail because each has its own queue (and, in
# production, its own workers); "periodic" carries beat's sweeps.
# "callbacks" carries the posts to integrators (tracking.callbacks): a slow receiver holds
# its own workers, never a send or a sweep.
CELERY_TASK_QUEUES = [
    Queue("transactional"),
    Queue("bulk"),
    Queue("periodic"),
    Queue("callbacks"),
]
CELERY_TASK_DEFAULT_QUEUE = "periodic"
CELERY_TASK_ROUTES = {
    "campaigns.tasks.campaign_start": {"queue": "bulk"},
    "campaigns.tasks.campaign_freeze": {"queue": "bulk"},
    "campaigns.tasks.deliver_batch": {"queue": "bulk"},
    "campaigns.tasks.deliver_message": {"queue": "transactional"},
    "campaigns.tasks.deliver_messages": {"queue": "transactional"},
    "campaigns.tasks.deliver_ready": {"queue": "transactional"},
    # A test key's simulated SES events: light, and awaited by its client as a message is.
    "tracking.tasks.simulated_events_record": {"queue": "transactional"},
    "tracking.tasks.callbacks_deliver": {"queue": "callbacks"},
    # Minutes of work for a large file: not on the queue beat's short sweeps share.
    "campaigns.tasks.contact_import_check": {"queue": "bulk"},
    "campaigns.tasks.contact_import_run": {"queue": "bulk"},
    "campaigns.tasks.*": {"queue": "periodic"},
}

# Tasks are acknowledged when they start (acks_late off): a batch that dies mid-way is not
# re-delivered by the broker, because re-running a hand-off could send twice. Rows left behind
# are found by the sweepers instead (at most once).
CELERY_TASK_ACKS_LATE = False
# One message in hand per process: a long campaign batch must not hold back messages that
# another idle process could take. With Redis, not even that: a worker takes a message only
# when a process is free to run it, so a worker that dies holds no batch but the ones it was
# running (a message it had only reserved waited for the visibility timeout, an hour).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_DISABLE_PREFETCH = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
# The worker logs through Django's LOGGING (config/logging.py: exception text withheld),
# not through handlers of its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes every database connection before and after each task unless
# this is set: a new PostgreSQL backend (and its catalog caches) per batch of 500. It keeps
# them for this many tasks instead; config.celery closes one that is broken or older than
# CONN_MAX_AGE before each task, as Django does before each request.
CELERY_DB_REUSE_MAX = 1000

# A committed transactional message whose delivery task has not run this long after it was
# enqueued (or after its send_at), with no batch alive for it, has lost its task: the message
# sweeper enqueues it again. Above a busy queue's wait; a lost message goes out this late.
MESSAGE_SWEEP_GRACE_SECONDS = env_int("MESSAGE_SWEEP_GRACE_SECONDS", 30)

CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    # Scheduled campaigns start within this interval of their time.
    "campaigns-start-due": {
        "task": "campaigns.tasks.campaigns_start_due",
        "schedule": timedelta(seconds=env_int("CAMPAIGN_START_POLL_SECONDS", 10)),
    },
    "campaigns-sweep": {
        "task": "campaigns.tasks.campaigns_sweep",
        "schedule": timedelta(seconds=10),
    },
    # Transactional messages: scheduled ones whose time came, lost tasks, dead hand-offs
    # (campaigns.message_sweeper). Its own entry: a slow campaign sweep does not delay it.
    "messages-sweep": {
        "task": "campaigns.tasks.messages_sweep",
        "schedule": timedelta(seconds=10),
        "options": {"queue": "periodic"},
    },
    # SES events that named a message id not recorded yet (tracking.ses_events): retried with
    # backoff; each row carries its own next attempt, this is only how often due rows are found.
    "esp-events-retry-pending": {
        "task": "tracking.tasks.esp_events_retry_pending",
        "schedule": timedelta(seconds=env_int("ESP_EVENT_RETRY_POLL_SECONDS", 60)),
        "options": {"queue": "periodic"},
    },
    # …and deleted once ESP_EVENT_PENDING_EXPIRY_HOURS old (an hour late at most).
    "esp-events-expire-pending": {
        "task": "tracking.tasks.esp_events_expire_pending",
        "schedule": timedelta(hours=1),
        "options": {"queue": "periodic"},
    },
    # Callbacks to integrators: new events queued and due deliveries handed to the callbacks
    # queue at most this late (tracking.callbacks).
    "callbacks-dispatch": {
        "task": "tracking.tasks.callbacks_dispatch",
        "schedule": timedelta(seconds=env_int("CALLBACK_POLL_SECONDS", 2)),
        "options": {"queue": "periodic"},
    },
    # The API's idempotency records count for 24 hours (campaigns.api.idempotency); past
    # that they are deleted, at most this late.
    "idempotency-records-expire": {
        "task": "campaigns.tasks.idempotency_records_expire",
        "schedule": timedelta(minutes=10),
        "options": {"queue": "periodic"},
    },
}
# A bulk job's creator (the freeze making its ledger rows) renews a lease this long before
# each chunk; the sweeper resumes a creation whose lease ran out (its worker died), within
# seconds rather than after the 5-minute stall threshold (campaigns.jobs).
JOB_CREATION_LEASE_SECONDS = env_int("JOB_CREATION_LEASE_SECONDS", 20)
