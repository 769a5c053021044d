"""Refused requests as the relay counts them and the portal names them.

The relay refuses some requests of a known key (disabled, expired, another IP, a model it may
not use, quota used up, rate limited, a bad or too large body, a model not in the listing).
Each is counted, never written on its own: a tool retrying a refused request thousands of
times a minute must neither flood the database nor slow the relay. The relay adds 1 to its
key's count for the minute (proxy.store: one Redis command, or a dict in the embedded
process), and a collector writes each minute's counts as RefusalCount rows
(billing.services.refusals), the current minute's too, within seconds. Requests with no or an
unknown key are not counted: there is no key, or team, to show them to.
"""

from dataclasses import dataclass

from django.utils.translation import gettext_lazy

# The relay's endpoints by the short stable names usage and refusals record, as the portal
# shows them.
ENDPOINT_LABELS = {
    "messages": "Messages",
    "count_tokens": "count_tokens",
    "chat_completions": "Chat Completions",
    "responses": "Responses",
    "models": "Models",
    "billing_subscription": "Billing subscription",
    "billing_usage": "Billing usage",
    "key": "Key",
}

# Refusal codes (proxy.errors.RelayError.code) as a person reads them.
REASON_LABELS = {
    "key_disabled": gettext_lazy("Key disabled"),
    "key_expired": gettext_lazy("Key expired"),
    "ip_not_allowed": gettext_lazy("IP not allowed"),
    "model_not_allowed": gettext_lazy("Model not allowed"),
    "model_not_found": gettext_lazy("Model not found"),
    "insufficient_quota": gettext_lazy("Quota used up"),
    "daily_limit_reached": gettext_lazy("Daily limit reached"),
    "weekly_limit_reached": gettext_lazy("Weekly limit reached"),
    "monthly_limit_reached": gettext_lazy("Monthly limit reached"),
    "member_monthly_limit_reached": gettext_lazy("Member's monthly cap reached"),
    "team_monthly_limit_reached": gettext_lazy("Team's monthly budget reached"),
    "concurrency_limit_exceeded": gettext_lazy("Too many requests in flight"),
    "rate_limit_exceeded": gettext_lazy("Rate limited"),
    "request_too_large": gettext_lazy("Request too large"),
}


def reason_label(code: str) -> str:
    """The label of a refusal code; a body error's own code (invalid_json, ...) as it is."""
    return str(REASON_LABELS.get(code) or "") or code.replace("_", " ").capitalize()


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused request of a known key: what is counted (per minute) of it."""

    key_id: int
    status_code: int
    code: str
    endpoint: str

    def field(self) -> str:
        """Its name in a minute's counts (a Redis hash field): "key|status|code|endpoint"."""
        return f"{self.key_id}|{self.status_code}|{self.code}|{self.endpoint}"

    @classmethod
    def from_field(cls, raw: str | bytes) -> "Refusal":
        text = raw.decode() if isinstance(raw, bytes) else raw
        key_id, status_code, code, endpoint = text.split("|")
        return cls(int(key_id), int(status_code), code, endpoint)
