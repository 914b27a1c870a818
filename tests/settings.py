"""Test settings: the real settings, on the PostgreSQL and Redis that `make test` starts."""

import os

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("ANYMAIL_WEBHOOK_SECRET", "sns:webhook-test-secret")
# The topic tests/sns_signing.py signs for (tests of other topics override the setting).
os.environ.setdefault("SNS_TOPIC_ARNS", "arn:aws:sns:us-east-1:123456789012:ses-events")
os.environ.setdefault("TRACKING_BASE_URL", "http://tracking.test")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
    raise ImproperlyConfigured(
        "The tests run on PostgreSQL: use `make test` (it starts a throwaway cluster), "
        "or set DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://…"
    )

from config.settings import *  # noqa: E402, F403

ALLOWED_HOSTS = ["*"]
# The test client and the test servers speak plain http (tests/config/test_deploy.py checks the
# https-only production settings).
SECURE_SSL_REDIRECT = False
# Hashing passwords slowly is for production; tests create admin users constantly.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
