"""Email: Amazon SES (v2), through campaigns.ses for campaigns and django-anymail for Django's mail.

The SES endpoint is boto3's business: set AWS_ENDPOINT_URL_SESV2 to point every SES call
(sends, stored templates, account quota) at any SES-compatible endpoint, such as the local one
`make demo` starts. Credentials come from boto3's usual chain (environment, profile, role).
"""

from django.core.exceptions import ImproperlyConfigured

from config.env import env_int, env_str

# Campaigns go through campaigns.ses (SES_CLIENT below); EMAIL_BACKEND is for Django's own mail
# (password resets, admins' errors).
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "anymail.backends.amazon_ses.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Mailwright Demo <news@example.com>")

AWS_SES_REGION = env_str("AWS_SES_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
SES_CONFIGURATION_SET = env_str("SES_CONFIGURATION_SET", "") or None

# The client campaign sends go through (campaigns.ses): "http", the lean one (SendBulkEmail and
# SendEmail as plain SigV4-signed HTTP, sparing the send workers botocore's request machinery:
# docs/decisions/0001-lean-ses-client.md), or "boto3", plain boto3. Both take their endpoint,
# region, credentials and timeouts from boto3.
SES_CLIENT = env_str("SES_CLIENT", "http")
if SES_CLIENT not in ("http", "boto3"):
    raise ImproperlyConfigured(f"SES_CLIENT must be 'http' or 'boto3', not {SES_CLIENT!r}.")

# botocore retries throttling and 5xx answers by itself (up to 3 retries in "legacy" mode).
# A retried 5xx may be a message SES already accepted, so a retry could send twice: one
# attempt only, and the send pipeline decides what to do with each answer (at most once).
SES_CLIENT_CONFIG = {
    "retries": {"total_max_attempts": 1, "mode": "standard"},
    "connect_timeout": env_int("SES_CONNECT_TIMEOUT_SECONDS", 5),
    "read_timeout": env_int("SES_READ_TIMEOUT_SECONDS", 30),
    "max_pool_connections": 20,
    "user_agent_appid": "mailwright",  # names the product in boto3's User-Agent
    # botocore re-checks every request against the API model before sending, a large share
    # of a worker's CPU (docs/PERFORMANCE.md). campaigns.ses builds the requests and SES
    # validates them anyway.
    "parameter_validation": False,
}

ANYMAIL = {
    "AMAZON_SES_SESSION_PARAMS": {"region_name": AWS_SES_REGION},
    "AMAZON_SES_CLIENT_PARAMS": {"config": SES_CLIENT_CONFIG},
    "AMAZON_SES_CONFIGURATION_SET_NAME": SES_CONFIGURATION_SET,
    # Basic-auth credentials ("user:password") that SNS must present on the SES webhook
    # (tracking.ses_events.webhook, which checks them itself; required to start unless DEBUG).
    "WEBHOOK_SECRET": env_str("ANYMAIL_WEBHOOK_SECRET", "") or None,
    # SNS subscription confirmations are confirmed by calling SNS, so pointing a topic at the
    # webhook is the whole set-up: only a topic of SNS_TOPIC_ARNS's, after basic auth and its
    # signature were checked (tracking.ses_events.webhook).
    "AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS": True,
}

# Campaign pacing (campaigns.ratelimit): one limit for all workers, through Redis.
# SES MaxSendRate in recipients/s; 0 = read it from SES GetAccount (cached 5 minutes).
SES_MAX_SEND_RATE = float(env_str("SES_MAX_SEND_RATE", "0"))
# Share of MaxSendRate campaigns use; the rest is for Django's own mail and network jitter.
SES_SEND_RATE_FRACTION = float(env_str("SES_SEND_RATE_FRACTION", "0.95"))
# Longest a batch waits for a send slot before giving its rows back and retrying the task.
# 4 bulk processes at 14/s hold at most 4 × 50 / 13.3 ≈ 15 s of reservations; 30 s covers it.
SES_SEND_RATE_MAX_WAIT_SECONDS = env_int("SES_SEND_RATE_MAX_WAIT_SECONDS", 30)
# Share of that pace the API's transactional messages take first while they have work (they
# book past the slots bulk sends were promised); the rest, and all of it while no message
# waits, goes to campaigns and jobs. 0 = no priority: first come, first served.
TRANSACTIONAL_RATE_SHARE = float(env_str("TRANSACTIONAL_RATE_SHARE", "0.2"))

# Prefix of the SES stored-template names this installation creates ("<prefix>-c<id>-<hash>"),
# so several installations can share one SES account.
SES_TEMPLATE_PREFIX = env_str("SES_TEMPLATE_PREFIX", "mailwright")
