from drf_spectacular.authentication import SessionScheme
from rest_framework.authentication import SessionAuthentication


class SessionAuthentication401(SessionAuthentication):
    """Session auth that answers 401 (not 403) to anonymous API calls."""

    def authenticate_header(self, request):
        return 'Session realm="dermatrack"'


class SessionAuthentication401Scheme(SessionScheme):
    """Describes the session scheme in the OpenAPI schema (drf-spectacular finds it by import)."""

    target_class = "portal.api_auth.SessionAuthentication401"
