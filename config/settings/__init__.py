"""Settings: read from the environment (see docs/CONFIGURATION.md).

The defaults are the embedded demo setup (SQLite, a file-system Celery broker, the local SES
endpoint); production sets DATABASE_URL, CELERY_BROKER_URL, DJANGO_SECRET_KEY and friends.
One module per integration: celery.py, email.py, events.py, login.py, tracking.py.
With DEBUG off the defaults are production's: https only, secure cookies, HSTS.
"""

import dj_database_url

from config.env import BASE_DIR, VAR_DIR, env_bool, env_int, env_list, env_str

DEBUG = env_bool("DJANGO_DEBUG", False)

# Secrets only come from the environment. A development key is allowed only with DEBUG on.
_DEV_SECRET_KEY = "insecure-development-key-never-use-in-production"  # noqa: S105
SECRET_KEY = env_str("DJANGO_SECRET_KEY", _DEV_SECRET_KEY if DEBUG else None)
# Rotating the key: the new one in DJANGO_SECRET_KEY, the old ones here (comma-separated), so
# what they signed (sessions, and the tracking and unsubscribe links of mail already sent) is
# still accepted while everything new is signed with the new key. Drop an old key once its
# mail is old enough for its links to be let go.
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS", "")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "config.admin_site.MailwrightAdminConfig",  # django.contrib.admin with our site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's and Redoc's files, served locally
    "anymail",
    "import_export",
    "django_celery_beat",
    "axes",
    "templates_app",
    "campaigns",
    "tracking",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.request_limits.RequestBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'mailwright.sqlite3'}"),
        conn_max_age=60,
        conn_health_checks=True,  # a connection PostgreSQL dropped is replaced, not used
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo runs web, worker and beat on one SQLite file: WAL lets readers proceed during a
    # write, IMMEDIATE takes the write lock at BEGIN (no deadlock on lock upgrade), and 20 s of
    # busy timeout rides out a worker's batch commit.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes first: it refuses a locked-out username and address before a password is
# checked (config/settings/login.py).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- https ----------------------------------------------------------------------------------
# Production sits behind a reverse proxy that terminates TLS and sets X-Forwarded-Proto and
# X-Forwarded-For; the app's ports are published on loopback only (docker-compose.yml), so
# only that proxy can send them. Off by default, so the demo works over plain http.
_BEHIND_TLS_PROXY = env_bool("DJANGO_BEHIND_TLS_PROXY")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if _BEHIND_TLS_PROXY else None
# Proxies appending to X-Forwarded-For in front of the app (config.proxy.client_ip).
TRUSTED_PROXY_COUNT = (
    env_int("DJANGO_TRUSTED_PROXY_COUNT", 1, minimum=1) if _BEHIND_TLS_PROXY else 0
)
# With DEBUG off, https only: plain http is redirected (the tracking and webhook fast routes
# leave plain http to Django for that: infra.wsgi_direct), browsers are told to keep to
# https for a year, subdomains included (HSTS, preload-ready), and cookies never travel in
# clear. Preloading only happens if someone submits the domain to the browsers' list.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
# Django's defaults, stated because the tracking views copy them onto the responses they
# answer without the middleware.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- request sizes --------------------------------------------------------------------------
# Bodies over MAX_REQUEST_BYTES are refused (413) before they are read: granian has no limit of
# its own (config.request_limits). Cap them at the reverse proxy too.
MAX_REQUEST_BYTES = env_int("DJANGO_MAX_REQUEST_BYTES", 100 * 1024 * 1024, minimum=1)
# What Django holds in memory: form fields and raw bodies (the SES webhook's SNS messages are at
# most 256 kB), and how many fields a form may have.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DJANGO_DATA_UPLOAD_MAX_BYTES", 2_621_440, minimum=1)
DATA_UPLOAD_MAX_NUMBER_FIELDS = env_int("DJANGO_DATA_UPLOAD_MAX_FIELDS", 1000, minimum=1)
DATA_UPLOAD_MAX_NUMBER_FILES = 10  # the admin's forms take one file at most
# Uploaded files larger than this go to a temporary file rather than memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("DJANGO_FILE_UPLOAD_MEMORY_BYTES", 2_621_440, minimum=0)

# The integrations API (campaigns.api, docs/API.md): keys or a staff session, scopes, one
# error shape, JSON in and out (the browsable API for a staff session).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "campaigns.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["campaigns.api.permissions.HasScope"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "campaigns.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Per key (or staff user), in Redis: API_RATE_LIMIT_* below.
    "DEFAULT_THROTTLE_CLASSES": ["campaigns.api.throttling.ApiRateThrottle"],
    # The OpenAPI 3 schema at /api/schema/ is generated from the views (docs/API.md).
    "DEFAULT_SCHEMA_CLASS": "campaigns.api.schema.ApiAutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Mailwright API",
    "DESCRIPTION": "Transactional messages, bulk jobs and the product's resources (docs/API.md).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from our static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Swagger UI would send the schema to validator.swagger.io for its badge.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # Public, as Stripe's: the schema describes the API, never anyone's data, and the code it
    # is generated from is open source; a caller's Authorization header is not even read.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # A request body's own component (XRequest), with what the API refuses in it (a blank
    # string where allow_blank is off: minLength 1): exact for both directions.
    "COMPONENT_SPLIT_REQUEST": True,
    # The key is what integrations send; a staff session (the browsable API) is for people.
    "AUTHENTICATION_WHITELIST": ["campaigns.api.authentication.ApiKeyAuthentication"],
    # One name per set of statuses, whichever endpoint shows it (spectacular would otherwise
    # call every `status` enum StatusXxxEnum).
    "ENUM_NAME_OVERRIDES": {
        "ContactStatusEnum": "campaigns.models.Contact.Status",
        "CampaignStatusEnum": "campaigns.models.Campaign.Status",
        "MessageStatusEnum": "campaigns.models.Notification.Status",
        "EventTypeEnum": "tracking.models.Event.Type",
    },
}
# Requests a second each API key may make (0: no limit), and how many may come at once after
# a quiet spell (0: one second's worth). Over it: 429 with Retry-After (campaigns.api.throttling).
API_RATE_LIMIT_PER_SECOND = float(env_str("API_RATE_LIMIT_PER_SECOND", "100"))
API_RATE_LIMIT_BURST = float(env_str("API_RATE_LIMIT_BURST", "0"))
# How long a web process may use its copy of a key without reading it again: a key revoked
# elsewhere is refused within this many seconds (0: read on every request; campaigns.apikeys).
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 5, minimum=0)
# How long a web process may use its copy of a template for the API's messages: an edit made
# elsewhere reaches them within this many seconds (0: read on every request;
# campaigns.api.views.template_lookup).
API_TEMPLATE_CACHE_SECONDS = env_int("API_TEMPLATE_CACHE_SECONDS", 5, minimum=0)

# Logs carry ids, never addresses, names or bodies (see docs/ARCHITECTURE.md): exceptions are
# logged by type and frames, their messages withheld (config/logging.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "withhold_exception_text": {"()": "config.logging.WithholdExceptionText"},
        "redact_paths": {"()": "config.access_log.RedactPaths"},
    },
    "formatters": {
        "plain": {
            "()": "config.logging.WithholdingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["withhold_exception_text"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # botocore logs whole request bodies (addresses, HTML) at DEBUG: keep it at WARNING.
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        # import-export logs each refused import row (its cells: addresses, names) at DEBUG.
        "import_export": {"level": "WARNING"},
        # Django's loggers print through the console handler above, once (without this, with
        # DEBUG on, Django's own console handler printed each line a second time).
        "django": {"handlers": [], "propagate": True},
        # runserver's access log (the demo) and Django's 4xx/5xx warnings, without query
        # strings (admin searches carry addresses) or tracking tokens: config.access_log.
        "django.server": {"handlers": [], "filters": ["redact_paths"], "propagate": True},
        "django.request": {"filters": ["redact_paths"]},
    },
}

from config.settings.callbacks import *  # noqa: E402, F403
from config.settings.celery import *  # noqa: E402, F403
from config.settings.email import *  # noqa: E402, F403
from config.settings.events import *  # noqa: E402, F403
from config.settings.login import *  # noqa: E402, F403
from config.settings.tracking import *  # noqa: E402, F403

# Contacts are exported as CSV only, by campaigns.csv_cells' formula-safe rule (import-export's
# own escaping drops the first "=" of a cell, changing the value): no IMPORT_EXPORT_ESCAPE_*.
# The largest contacts CSV the admin imports, in MB (the form says so for a larger one). The
# file is stored in the database and read whole by a worker: 20 MB is ~280,000 rows of a
# five-column export, checked and written in about a minute each (docs/PERFORMANCE.md).
CONTACT_IMPORT_MAX_MB = env_int("CONTACT_IMPORT_MAX_MB", 20)
# The pre-send review's link check fetches public addresses only (not this network's own
# hosts); on for a site whose newsletters link to an intranet the servers share.
LINK_CHECK_PRIVATE_ADDRESSES = env_bool("LINK_CHECK_PRIVATE_ADDRESSES", False)
