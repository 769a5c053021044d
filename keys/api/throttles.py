"""Rate limits for API callers, counted in the shared cache so every worker sees one count."""

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from keys.models import ApiToken


class ApiTokenRateThrottle(SimpleRateThrottle):
    """One budget per token; a browser session has its user's budget, anonymous calls their IP's.

    Per token rather than per user, so one runaway integration cannot starve a user's others.
    """

    scope = "api_token"

    def get_rate(self) -> str | None:
        # Read at request time rather than at import (DRF's default), so a changed setting applies.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request: Request, view) -> str:
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"ip-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
