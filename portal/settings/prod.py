"""Production: no default secrets, HTTPS only."""

from django.core.exceptions import ImproperlyConfigured

from portal.env import env_str
from portal.settings.base import *  # noqa: F403

if not env_str("DJANGO_SECRET_KEY"):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production")
if ALLOW_LOCAL_KEY_FILES:  # noqa: F405
    raise ImproperlyConfigured("Set DERMATRACK_ALLOW_LOCAL_KEY_FILES=false and FIELD_ENCRYPTION_KEY in production")
DEBUG = False
SECURE_SSL_REDIRECT = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = 31536000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Static files: `collectstatic` writes hashed, compressed copies to STATIC_ROOT; WhiteNoise
# serves them with far-future cache headers. Nothing is looked up in static/ at request time.
STORAGES = STORAGES | {  # noqa: F405
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = False
WHITENOISE_AUTOREFRESH = False
