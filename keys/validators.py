"""Validation of key settings: one home for the rules and their messages.

The model fields use these validators, so `full_clean()` in the services applies them, and
the portal, admin and API all show the same field-level messages.
"""

import functools
import ipaddress
import re
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import ProhibitNullCharactersValidator
from django.utils.translation import gettext, gettext_lazy, gettext_noop

NAME_MAX_LENGTH = 100
# A team's default expiration period: up to ten years, so the date it gives stays a date.
MAX_EXPIRY_DAYS = 3650

RATE_LIMIT_PATTERN = re.compile(r"^([1-9][0-9]{0,8})/([smhd])$")
# English, marked for the catalogue; raised in the active language (gettext at the raise).
RATE_LIMIT_MESSAGE = gettext_noop(
    "Enter a rate limit like 60/m: a whole number of at least 1, then /s, /m, /h or /d "
    "(per second, minute, hour or day)."
)

# The model field holds whole cents: ApiKey.quota_limit_usd has max_digits=12 and
# decimal_places=2, so the largest quota is 9,999,999,999.99 US dollars.
QUOTA_MAX = Decimal("9999999999.99")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class UsdLimitWords:
    """How the messages about one spend limit name it and what its 0 means.

    One message for every amount that is not a whole number of cents within range (not a
    number, "1e400", "25.001", 30 digits), in the portal, the admin, the API and the CLI alike:
    it says what the unit and the range are, which Django's "Ensure that there are no more than
    2 decimal places" did not."""

    # Lazy translations (gettext_lazy) or plain text: each message is put together in the
    # language active when it is read.
    name: str
    zero_means: str

    def _words(self) -> dict[str, str]:
        return {"name": str(self.name), "zero": str(self.zero_means), "max": f"{QUOTA_MAX:,}"}

    @property
    def message(self) -> str:
        return (
            gettext(
                "Enter the %(name)s in US dollars with at most 2 decimal places (whole cents), "
                "e.g. 25 or 25.50, up to %(max)s; 0 means %(zero)s."
            )
            % self._words()
        )

    @property
    def below_a_cent_message(self) -> str:
        return (
            gettext(
                "A %(name)s below 0.01 US dollars would be stored as 0, which means %(zero)s. "
                "Enter at least 0.01, or 0 for %(zero)s."
            )
            % self._words()
        )

    @property
    def negative_message(self) -> str:
        words = self._words()
        words["name"] = words["name"].capitalize()
        return gettext("%(name)s cannot be negative. Use 0 for %(zero)s.") % words


QUOTA_WORDS = UsdLimitWords(gettext_lazy("quota limit"), gettext_lazy("unlimited"))
QUOTA_MESSAGE = QUOTA_WORDS.message
QUOTA_BELOW_A_CENT_MESSAGE = QUOTA_WORDS.below_a_cent_message
# A key's spend windows (billing.windows), beside its lifetime quota.
DAILY_LIMIT_WORDS = UsdLimitWords(gettext_lazy("daily limit"), gettext_lazy("no daily limit"))
WEEKLY_LIMIT_WORDS = UsdLimitWords(gettext_lazy("weekly limit"), gettext_lazy("no weekly limit"))
MONTHLY_LIMIT_WORDS = UsdLimitWords(gettext_lazy("monthly limit"), gettext_lazy("no monthly limit"))

# Plain decimal notation in ASCII digits. Decimal() alone also reads Arabic-Indic digits ("٥"),
# underscores ("1_000"), exponents ("1e-400", a positive amount that is 0 in cents) and
# "Infinity"; the minus sign is let through so a negative amount gets its own message.
_QUOTA_PATTERN = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

_IP_SEPARATORS = re.compile(r"[\s,]+")

# Far more than any real allow-list; without a cap, a member could make the portal, the API
# and the relay's key cache chew through hundreds of thousands of entries on every save.
MAX_ALLOWED_IPS = 1000


def parse_allowed_ips(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Turn user input (text or a list) into normalised IPs and CIDRs, or name the bad entry.

    Entries may be separated by commas, spaces or newlines. Host bits in a CIDR are rejected
    rather than silently masked, so "10.0.0.1/8" does not quietly mean "10.0.0.0/8".
    """
    if value is None:
        return []
    if isinstance(value, str):
        entries = [part for part in _IP_SEPARATORS.split(value) if part]
    else:
        entries = []
        for item in value:
            if not isinstance(item, str):
                raise ValidationError(
                    gettext("Each IP restriction entry must be text, not %(value)r."),
                    code="invalid_ip",
                    params={"value": item},
                )
            entries.extend(part for part in _IP_SEPARATORS.split(item) if part)
    # Counted as typed, before any entry is parsed, so an oversized list is refused cheaply.
    if len(entries) > MAX_ALLOWED_IPS:
        raise ValidationError(
            gettext(
                "IP restriction can hold at most %(limit)s addresses or ranges; this one has "
                "%(count)s."
            ),
            code="too_many_ips",
            params={"limit": f"{MAX_ALLOWED_IPS:,}", "count": f"{len(entries):,}"},
        )
    # A dict drops repeats in first-seen order in linear time (a list's `in` made it quadratic).
    return list(dict.fromkeys(_canonical_network(entry) for entry in entries))


def _canonical_network(entry: str) -> str:
    try:
        # `ipaddress` accepts an IPv6 zone id ("fe80::1%eth0"), but a client address never
        # carries one, so such an entry would never match and silently lock the key out.
        if "%" in entry:
            raise ValueError(entry)
        if "/" in entry:
            return str(ipaddress.ip_network(entry, strict=True))
        return str(ipaddress.ip_address(entry))
    except ValueError:
        raise ValidationError(
            gettext(
                "“%(entry)s” is not a valid IPv4 or IPv6 address or CIDR range "
                "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32)."
            ),
            code="invalid_ip",
            params={"entry": entry},
        ) from None


def validate_allowed_ips(value: list[str]) -> None:
    if not isinstance(value, list):
        raise ValidationError(
            gettext("IP restriction must be a list of addresses."), code="invalid_ip"
        )
    parse_allowed_ips(value)


def validate_rate_limit(value: str) -> None:
    if value and not RATE_LIMIT_PATTERN.match(value):
        raise ValidationError(gettext(RATE_LIMIT_MESSAGE), code="invalid_rate_limit")


def normalise_rate_limit(value: str | None) -> str:
    """Accept stray spaces and upper case ("60 / M") but store the canonical "60/m"."""
    if not value:
        return ""
    return re.sub(r"\s+", "", str(value)).lower()


def validate_quota(value: Decimal) -> None:
    if value is None:
        return
    if value < 0:
        raise ValidationError(
            gettext("Quota limit cannot be negative. Use 0 for unlimited."), code="negative_quota"
        )


def validate_time_zone(value: str) -> None:
    """An IANA time zone name (Asia/Shanghai, Europe/Berlin, UTC), as zoneinfo knows it."""
    if value not in available_time_zones():
        raise ValidationError(
            gettext(
                "“%(value)s” is not a time zone. Use an IANA name such as Asia/Shanghai or UTC."
            )
            % {"value": value},
            code="invalid_time_zone",
        )


@functools.cache
def available_time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


MAX_CONCURRENCY = 10_000


def parse_quota(value: str | int | Decimal | None) -> Decimal:
    """Read a quota from user input; empty or any spelling of zero means 0 (unlimited). A
    negative amount is let through for validate_quota, the model's check, to name."""
    return _parse_usd(value, QUOTA_WORDS)


def parse_usd_limit(value: str | int | Decimal | None, words: UsdLimitWords) -> Decimal:
    """Read a spend limit from user input as parse_quota does, with messages naming the limit
    (`words`), and refuse a negative amount here: the model's validate_quota would call it a
    quota."""
    amount = _parse_usd(value, words)
    if amount < 0:
        raise ValidationError(words.negative_message, code="negative_quota")
    return amount


def _parse_usd(value: str | int | Decimal | None, words: UsdLimitWords) -> Decimal:
    if value is None or (isinstance(value, str) and not value.strip()):
        return Decimal("0")
    if isinstance(value, str) and _QUOTA_PATTERN.fullmatch(value.strip()):
        quota = Decimal(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        quota = Decimal(value)
    elif isinstance(value, Decimal) and value.is_finite():
        quota = value
    else:
        raise ValidationError(words.message, code="invalid_quota")
    if quota == 0:
        # One spelling of unlimited, not "-0.00" or "0.000".
        return Decimal("0")
    # Stored in cents, such an amount would become 0: unlimited instead of almost nothing.
    if 0 < quota < CENT:
        raise ValidationError(words.below_a_cent_message, code="quota_below_a_cent")
    if quota > QUOTA_MAX:
        raise ValidationError(words.message, code="quota_too_large")
    # "25.000" is a whole number of cents: only real precision below a cent is an error.
    if quota.as_tuple().exponent < -2:
        cents = quota.quantize(CENT)
        if cents != quota:
            raise ValidationError(words.message, code="quota_below_cents")
        return cents
    return quota


_MAX_CONCURRENCY_TEMPLATE = gettext_noop(
    "Enter max concurrent requests as a whole number, e.g. 4, up to %(max)s; 0 means unlimited."
)
# The English message; raised in the active language (_max_concurrency_message).
MAX_CONCURRENCY_MESSAGE = _MAX_CONCURRENCY_TEMPLATE % {"max": f"{MAX_CONCURRENCY:,}"}


def _max_concurrency_message() -> str:
    return gettext(_MAX_CONCURRENCY_TEMPLATE) % {"max": f"{MAX_CONCURRENCY:,}"}


# ASCII digits only, and not so many that int() would refuse them (past 4,300 digits).
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,12}")


def parse_max_concurrency(value: str | int | None) -> int:
    """Read a key's max concurrent requests from user input: a whole number of ASCII digits,
    0 to MAX_CONCURRENCY; empty means 0 (unlimited)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise ValidationError(_max_concurrency_message(), code="invalid_max_concurrency")
    if number < 0:
        raise ValidationError(
            gettext("Max concurrent requests cannot be negative. Use 0 for unlimited."),
            code="negative_max_concurrency",
        )
    if number > MAX_CONCURRENCY:
        raise ValidationError(_max_concurrency_message(), code="max_concurrency_too_large")
    return number


def validate_multiplier(value: Decimal) -> None:
    if value is not None and value <= 0:
        raise ValidationError(
            gettext("The multiplier must be greater than 0 (for example 0.25 or 1.0)."),
            code="multiplier_not_positive",
        )


def validate_model_patterns(value: list[str]) -> None:
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item.strip() for item in value
    ):
        raise ValidationError(
            gettext("Models must be a list of model names or patterns such as claude-*."),
            code="invalid_models",
        )
    # PostgreSQL's jsonb cannot store NUL (\u0000), so without this the save would be a 500.
    # Django's own validator, so the message matches what the forms and the API already say.
    for item in value:
        ProhibitNullCharactersValidator()(item)
