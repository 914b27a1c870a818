"""Who calls: an API key (Authorization: Bearer mw_live_…), or a staff user's session (the
browsable API), whose model permissions then stand in for scopes (campaigns.api.permissions)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from campaigns.apikeys import KeyRefused, api_key_check
from campaigns.models import ApiKey


class ApiKeyUser:
    """request.user for a call made with a key: authenticated, not a person."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.pk = None

    def has_perm(self, perm: str, obj=None) -> bool:
        return False

    def __str__(self) -> str:
        return f"API key {self.key.prefix}"


def key_refused(refused: KeyRefused) -> exceptions.APIException:
    """The answer to a refused key: 401 for one that is not ours (with WWW-Authenticate), 403
    for one of ours that may no longer be used (revoked, expired)."""
    if refused.status == 403:
        return exceptions.PermissionDenied(detail=refused.message, code=refused.code)
    return exceptions.AuthenticationFailed(detail=refused.message, code=refused.code)


KEYWORD = "Bearer"


def api_key_from_header(request) -> ApiKey | None:
    """The key the request's Authorization header carries (None without the header), or the
    401/403 to answer (DRF's exceptions). Shared by the DRF authentication below and the lean
    route of POST /api/v1/messages (campaigns.api.direct)."""
    # From META, where WSGI puts it (text, as latin-1): request.headers, which DRF's
    # get_authorization_header reads, first builds a dict of every header.
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    keyword, _, raw = header.partition(" ")
    # Schemes are case-insensitive (RFC 9110 §11.1); anything but Bearer is refused, not
    # ignored: a client that sent credentials means them (Basic, a bare key…).
    if keyword.lower() != KEYWORD.lower() or not raw.strip():
        raise exceptions.AuthenticationFailed(
            "Send the key as: Authorization: Bearer <key>.", code="invalid_api_key"
        )
    try:
        return api_key_check(raw.strip())
    except KeyRefused as refused:
        raise key_refused(refused) from None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = KEYWORD

    def authenticate(self, request):
        key = api_key_from_header(request)
        return None if key is None else (ApiKeyUser(key), key)

    def authenticate_header(self, request) -> str:
        return self.keyword  # a 401 (not a 403) for a request without credentials


class ApiKeySchemeExtension(OpenApiAuthenticationExtension):
    """How /api/schema/ describes the key: an HTTP bearer token (docs/API.md#keys)."""

    target_class = ApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key made in the admin: `Authorization: Bearer mw_live_…`.",
        }
