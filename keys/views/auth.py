"""Signing in: Django's sign-in page, with failed attempts rate limited."""

import math

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.http import HttpRequest
from django.utils.translation import ngettext
from django_ratelimit.core import get_usage

LOGIN_LIMITS = (
    # The client's address as the relay sees it: X-Forwarded-For only from TRUSTED_PROXIES, so
    # behind a load balancer every visitor does not share one counter.
    ("login-failures-ip", "core.client_ip.request_client_ip", "LOGIN_FAILURES_PER_IP"),
    ("login-failures-username", "keys.views.auth.login_username", "LOGIN_FAILURES_PER_USERNAME"),
)


def login_username(group: str, request: HttpRequest) -> str:
    """The rate-limit key for a sign-in: the username as Django's sign-in will look it up.

    Django normalizes usernames with NFKC before authenticating, so the key must too: otherwise
    "brute1" typed with a fullwidth "b" (or any other look-alike) reaches the same account
    through a fresh counter each time. Case-folded and stripped as well, so "Lead" and " lead"
    share one counter.
    """
    username = get_user_model().normalize_username(request.POST.get("username", ""))
    return username.strip().casefold()


class LoginView(auth_views.LoginView):
    """Django's sign-in, with failed attempts counted per client IP and per username.

    Only failures count, so someone who signs in often is never locked out; once either
    counter is full every attempt is refused without checking the password, which is what
    stops a password being guessed.
    """

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        seconds_left = self._seconds_until_allowed(request)
        if seconds_left is not None:
            # An unbound form: binding it would run authenticate(), the very check refused here.
            form = self.get_form_class()(
                request, initial={"username": request.POST.get("username", "")}
            )
            minutes = max(1, math.ceil(seconds_left / 60))
            refusal = ngettext(
                "Too many failed sign-in attempts. Please wait %(minutes)d minute and try again.",
                "Too many failed sign-in attempts. Please wait %(minutes)d minutes and try again.",
                minutes,
            ) % {"minutes": minutes}
            return self.render_to_response(
                self.get_context_data(form=form, refusal=refusal), status=429
            )
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        for group, key, setting in LOGIN_LIMITS:
            get_usage(
                self.request,
                group=group,
                key=key,
                rate=getattr(settings, setting),
                increment=True,
            )
        return super().form_invalid(form)

    @staticmethod
    def _seconds_until_allowed(request: HttpRequest) -> int | None:
        waits = []
        for group, key, setting in LOGIN_LIMITS:
            usage = get_usage(request, group=group, key=key, rate=getattr(settings, setting))
            if usage is not None and usage["count"] >= usage["limit"]:
                waits.append(usage["time_left"])
        return max(waits) if waits else None
