"""Everything lives here; dev/test/prod change a few lines each. Behaviour that matters in
production is switched by environment variables, never by which file is loaded or by DEBUG."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import dj_database_url

from portal.env import env_bool, env_int, env_list, env_str
from portal.keys import load_or_create_key_list

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("DERMATRACK_VAR_DIR", str(BASE_DIR / "var")))  # type: ignore[arg-type]

SECRET_KEY = env_str("DJANGO_SECRET_KEY") or "dev-only-insecure-secret-key-change-me"
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",  # runserver leaves static files to WhiteNoise, as gunicorn does
    "django.contrib.staticfiles",
    "rest_framework",
    "guardian",
    "encrypted_model_fields",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "csp",
    "drf_spectacular",
    "portal",
    "patients",
    "lesions",
    "portal.web",
    "portal.web.privacy",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files in every setting, whatever DEBUG says
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "portal.authentication.SessionIdleTimeoutMiddleware",
    "portal.authentication.TwoFactorMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.audit.RequestContextMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires
]

ROOT_URLCONF = "portal.web.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.portal",
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'dermatrack.sqlite3'}", conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so a real worker process can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "portal.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out logins before any password check
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
GUARDIAN_RAISE_403 = False
ANONYMOUS_USER_NAME = None  # no guardian anonymous user: anonymous visitors see nothing

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env_int("DERMATRACK_SESSION_SECONDS", 8 * 3600)
SESSION_COOKIE_HTTPONLY = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# Idle sessions end sooner than SESSION_COOKIE_AGE (portal.authentication.SessionIdleTimeoutMiddleware).
DERMATRACK_SESSION_IDLE_SECONDS = env_int("DERMATRACK_SESSION_IDLE_SECONDS", 30 * 60)
CSRF_COOKIE_HTTPONLY = True

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# WhiteNoise serves /static/ in the process itself, so the run command, the tests and production
# behave alike with DEBUG off. Here straight from static/ (no collectstatic, edits show on reload);
# production (settings/prod.py) serves the collected, hashed and compressed copies in STATIC_ROOT.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# Uploaded images and explanation images are encrypted on disk and never served by URL.
MEDIA_ROOT = Path(env_str("DERMATRACK_MEDIA_ROOT") or VAR_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "portal.crypto.EncryptedFileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Field and file encryption keys: a comma-separated list, newest first (the others still
# decrypt during a rotation). From the environment (or *_FILE); for local runs only, a key
# file under var/ is created on first use. Production refuses to start without one.
ALLOW_LOCAL_KEY_FILES = env_bool("DERMATRACK_ALLOW_LOCAL_KEY_FILES", True)
FIELD_ENCRYPTION_KEY = load_or_create_key_list(
    "FIELD_ENCRYPTION_KEY", VAR_DIR / "field_encryption.key", allow_create=ALLOW_LOCAL_KEY_FILES
)
# The blind-index key (record-number lookup, patient search tokens): also newest first. Lookups
# accept hashes under any of them while `rotate_keys` recomputes every index under the newest.
BLIND_INDEX_KEY, *BLIND_INDEX_OLD_KEYS = load_or_create_key_list(
    "BLIND_INDEX_KEY", VAR_DIR / "blind_index.key", allow_create=ALLOW_LOCAL_KEY_FILES
)

# Uploads
DERMATRACK_MAX_UPLOAD_BYTES = env_int("DERMATRACK_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
DERMATRACK_MAX_IMAGE_PIXELS = env_int("DERMATRACK_MAX_IMAGE_PIXELS", 40_000_000)
DERMATRACK_MIN_IMAGE_SIDE = env_int("DERMATRACK_MIN_IMAGE_SIDE", 64)
# Memory bounds for decoding (lesions/imaging.py; benchmarks/upload_memory.py measures them):
# refuse what would take more than this to decode, and keep at most this many pixels a side.
DERMATRACK_MAX_DECODED_BYTES = env_int("DERMATRACK_MAX_DECODED_BYTES", 160_000_000)
DERMATRACK_MAX_STORED_SIDE = env_int("DERMATRACK_MAX_STORED_SIDE", 4096)
DERMATRACK_MAX_ASPECT_RATIO = env_int("DERMATRACK_MAX_ASPECT_RATIO", 10)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# The client's file name never reaches the file system or a log (portal/uploads.py).
FILE_UPLOAD_HANDLERS = [
    "portal.uploads.NamelessMemoryFileUploadHandler",
    "portal.uploads.NamelessTemporaryFileUploadHandler",
]

# Celery: with nothing set, a file-based broker under var/ so a fresh checkout runs a real
# worker with no server. CELERY_BROKER_URL=redis://... for production and CI.
# The hard limit of any task (each task's own time_limit is at most this) and the longest
# countdown a retry waits; the broker's visibility timeout is derived from both, below.
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
CELERY_TASK_MAX_RETRY_COUNTDOWN = 60
# ("localhost" only because kombu warns about a URL without a host; the transport ignores it)
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://localhost/"
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = Path(env_str("DERMATRACK_BROKER_DIR") or VAR_DIR / "broker")
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # kombu's virtual transports sleep this long when the queue is empty (default 1 s):
        # each of an upload's two hops (classify, then explain) waited up to that long.
        # Listing a folder ten times a second costs the idle worker well under 1 % of a core.
        "polling_interval": env_int("DERMATRACK_BROKER_POLL_MS", 100) / 1000,
    }
else:
    # An unacknowledged task (its worker died) is delivered again after this many seconds. It
    # must outlast the longest a task can legitimately stay unacknowledged (the hard time limit,
    # plus the longest retry countdown a worker holds a message for), or a slow task would run
    # twice; any longer only delays recovery. 3600 s left a killed LIME task pending for an hour.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int(
            "DERMATRACK_BROKER_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + CELERY_TASK_MAX_RETRY_COUNTDOWN + 60
        ),
        # How often workers look for such tasks.
        "unacked_restore_interval": env_int("DERMATRACK_BROKER_RESTORE_SECONDS", 60),
        "unacked_restore_throttle": 1,
    }
CELERY_TASK_IGNORE_RESULT = True  # the row carries the status, never the result backend
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The sweep's period; benchmarks/load.py --chaos lowers it (with the two broker settings above
# and DERMATRACK_STALE_CLAIM_SECONDS) so that a one-minute run shows recovery.
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-examinations": {
        "task": "lesions.tasks.requeue_stale_examinations_task",
        "schedule": float(env_int("DERMATRACK_SWEEP_SECONDS", 60)),
    },
}
# New high-risk alerts e-mail the clinic's dermatologists (no PHI in the message; console
# backend unless DJANGO_EMAIL_BACKEND is set, below). DERMATRACK_BASE_URL builds the link.
DERMATRACK_ALERT_EMAILS = env_bool("DERMATRACK_ALERT_EMAILS", False)
DERMATRACK_BASE_URL = env_str("DERMATRACK_BASE_URL") or "http://127.0.0.1:8000"
# A RUNNING claim, or a PENDING examination or explanation, older than this is presumed lost
# with its worker (or its message) and goes back to the queue (the sweep, every 60 s).
DERMATRACK_STALE_CLAIM_SECONDS = env_int("DERMATRACK_STALE_CLAIM_SECONDS", 300)
# Text in uploaded images (lesions/ocr.py, RapidOCR; issue 13): read before classification. An
# OCR run past this limit is abandoned (ocr_status "timeout") and the image is classified unmasked.
DERMATRACK_OCR_ENABLED = env_bool("DERMATRACK_OCR_ENABLED", True)
DERMATRACK_OCR_TIMEOUT_SECONDS = env_int("DERMATRACK_OCR_TIMEOUT_SECONDS", 20)
# The classifier's folder (ONNX file, CAM weights, metadata JSON): the one place that says which
# model the portal runs; lesions.risk hands it to the inference library.
DERMATRACK_MODEL_DIR = Path(env_str("DERMATRACK_MODEL_DIR") or BASE_DIR / "inference" / "models")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["portal.api_auth.SessionAuthentication401"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
}

# Logs never carry PHI: records are named by opaque UUIDs only.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DERMATRACK_LOG_LEVEL", "INFO")},
    "loggers": {
        "axes": {"level": "WARNING"},  # one INFO line per login otherwise
        # Celery's "Task ... received" / "succeeded in" pair per task: the tasks log their own result.
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
        "celery.beat": {"level": "WARNING"},  # "Sending due task" every minute otherwise
        # PDF reports (lesions.reports): eight "Step n" progress lines per report, font subsetting notes.
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
    },
}

DERMATRACK_DEMO_DATA_DIR = env_str("DERMATRACK_DEMO_DATA_DIR", str(BASE_DIR.parent / "shared" / "data" / "ham10000"))

# --- Security (issue #6) -------------------------------------------------------------------
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",  # verifies (and upgrades) older hashes
]
# Login throttling and lockout (django-axes): 5 failures for one username from one address lock
# that pair out for 15 minutes; the response is the same whether or not the account exists.
AXES_ENABLED = env_bool("DERMATRACK_LOGIN_LOCKOUT", True)
AXES_FAILURE_LIMIT = env_int("DERMATRACK_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = _dt.timedelta(minutes=env_int("DERMATRACK_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# Behind the reverse proxy (README's production notes) set DERMATRACK_PROXY_COUNT=1: the client
# address is then the one the proxy appended to X-Forwarded-For, not the proxy's own.
if env_int("DERMATRACK_PROXY_COUNT", 0):
    AXES_IPWARE_PROXY_COUNT = env_int("DERMATRACK_PROXY_COUNT", 0)
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]

# TOTP two-factor authentication for dermatologists, staff and administrators (django-otp).
DERMATRACK_REQUIRE_2FA = env_bool("DERMATRACK_REQUIRE_2FA", True)
OTP_TOTP_ISSUER = "Dermatrack"

# Password reset mails: the console in development, SMTP in production (EMAIL_* variables).
EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND") or "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL") or "dermatrack@localhost"
PASSWORD_RESET_TIMEOUT = 3600

# Content-Security-Policy (django-csp): no inline scripts, nothing from other origins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# OpenAPI schema (drf-spectacular) at /api/schema/, fuzzed by schemathesis in the test suite.
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"
SPECTACULAR_SETTINGS = {
    "TITLE": "Dermatrack API",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    # One name for a choice set several fields share (personal and family history of melanoma).
    "ENUM_NAME_OVERRIDES": {"YesNoUnknownEnum": "patients.models.YesNoUnknown"},
}

# Privacy: the version of the consent text patients agree to at registration (recorded with each consent)
# and how long a break-the-glass emergency access lasts.
DERMATRACK_CONSENT_VERSION = "2026-1"
# FHIR export (lesions.fhir): the base of the URIs naming this deployment's identifier and code
# systems (record numbers per clinic, model file hashes, the model's output codes). The default is
# a placeholder in the reserved .invalid domain; a clinic sets its own.
DERMATRACK_FHIR_BASE_URL = env_str("DERMATRACK_FHIR_BASE_URL", "https://dermatrack.invalid/fhir")
DERMATRACK_EMERGENCY_ACCESS_MINUTES = env_int("DERMATRACK_EMERGENCY_ACCESS_MINUTES", 60)
# Patient portal invitations (patients.accounts): how long an e-mailed link and a printed code
# stay valid; failed activation attempts per client address per window before HTTP 429; wrong
# dates of birth entered with one code before that code is revoked.
DERMATRACK_INVITE_LINK_HOURS = env_int("DERMATRACK_INVITE_LINK_HOURS", 7 * 24)
DERMATRACK_INVITE_CODE_HOURS = env_int("DERMATRACK_INVITE_CODE_HOURS", 72)
DERMATRACK_INVITE_FAILURE_LIMIT = env_int("DERMATRACK_INVITE_FAILURE_LIMIT", 10)
DERMATRACK_INVITE_FAILURE_WINDOW_MINUTES = env_int("DERMATRACK_INVITE_FAILURE_WINDOW_MINUTES", 15)
DERMATRACK_INVITE_CODE_ATTEMPTS = env_int("DERMATRACK_INVITE_CODE_ATTEMPTS", 5)
