"""Personal access tokens: `Authorization: Token hcat_…`, looked up by SHA-256 digest."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from keys.models import ApiToken
from keys.secret_formats import API_TOKEN
from keys.services import api_token_mark_used

KEYWORD = "Token"
INVALID_CREDENTIALS = "Invalid or revoked API token."
RELAY_KEY_REFUSED = (
    "This is not an API token (they start with “hcat_”); relay keys do not work here."
)


class ApiTokenAuthentication(BaseAuthentication):
    """Authenticates as the token's user; `request.auth` is the ApiToken (the throttle's key)."""

    def authenticate(self, request: Request) -> tuple | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Send the token as “Authorization: Token hcat_…”.")
        try:
            plaintext = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed(INVALID_CREDENTIALS) from None
        if not plaintext.startswith(API_TOKEN.prefix):
            # Relay keys (sk-hc-…) are for the relay only; refusing them by their prefix means a
            # leaked relay key can never read or manage anything through the API.
            raise AuthenticationFailed(RELAY_KEY_REFUSED)
        if not API_TOKEN.matches(plaintext):
            # No token has this shape, so no look-up could find one (as the relay does for keys).
            raise AuthenticationFailed(INVALID_CREDENTIALS)
        # The lookup is by digest, so no comparison ever involves the secret itself; and the
        # token is 256 random bits, so the digest's index lookup time reveals nothing useful.
        token = (
            ApiToken.objects.active()
            .select_related("user")
            .filter(digest=API_TOKEN.digest(plaintext))
            .first()
        )
        if token is None or not token.user.is_active:
            raise AuthenticationFailed(INVALID_CREDENTIALS)
        api_token_mark_used(token=token)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with WWW-Authenticate: Token) rather than 403 to anonymous calls.
        return KEYWORD


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A personal access token from the portal: `Token hcat_…`.",
        }
