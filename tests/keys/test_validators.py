"""The key-setting rules on their own; tests/keys/test_services.py checks them through the
services, with nothing written on failure."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from keys.models import ApiKey
from keys.validators import (
    QUOTA_MAX,
    RATE_LIMIT_MESSAGE,
    normalise_rate_limit,
    parse_allowed_ips,
    parse_quota,
    validate_allowed_ips,
    validate_model_patterns,
    validate_multiplier,
    validate_quota,
    validate_rate_limit,
)

from ..factories import distinct_ips


def bad_ip_message(entry: str) -> str:
    return (
        f"“{entry}” is not a valid IPv4 or IPv6 address or CIDR range "
        "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32)."
    )


# --- allowed IPs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, []),
        ("", []),
        (" ,\n\t, ", []),
        ([], []),
        ("203.0.113.7", ["203.0.113.7"]),
        ("203.0.113.0/24", ["203.0.113.0/24"]),
        ("203.0.113.7/32", ["203.0.113.7/32"]),
        ("0.0.0.0/0", ["0.0.0.0/0"]),
        ("2001:DB8::1", ["2001:db8::1"]),
        ("2001:0db8:0000:0000::/32", ["2001:db8::/32"]),
        ("::1", ["::1"]),
        ("::/0", ["::/0"]),
        ("10.0.0.1,10.0.0.2", ["10.0.0.1", "10.0.0.2"]),
        ("10.0.0.1 10.0.0.2", ["10.0.0.1", "10.0.0.2"]),
        ("10.0.0.1\n10.0.0.2\r\n2001:db8::/48", ["10.0.0.1", "10.0.0.2", "2001:db8::/48"]),
        (" 10.0.0.1 ,\n, 10.0.0.2, ", ["10.0.0.1", "10.0.0.2"]),
        ("10.0.0.1, 10.0.0.1, 2001:DB8::1, 2001:db8::1", ["10.0.0.1", "2001:db8::1"]),
        (["10.0.0.1", " 2001:db8::/32 "], ["10.0.0.1", "2001:db8::/32"]),
        (["10.0.0.1, 10.0.0.2"], ["10.0.0.1", "10.0.0.2"]),
        (("192.0.2.0/24",), ["192.0.2.0/24"]),
    ],
)
def test_parse_allowed_ips_accepts_and_normalises(raw, expected):
    assert parse_allowed_ips(raw) == expected


@pytest.mark.parametrize(
    ("raw", "bad_entry"),
    [
        ("10.0.0.300", "10.0.0.300"),
        ("example.com", "example.com"),
        ("10.0.0.1/8", "10.0.0.1/8"),  # host bits set: refused, not silently masked
        ("2001:db8::1/32", "2001:db8::1/32"),
        ("::g", "::g"),
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("2001:db8::/129", "2001:db8::/129"),
        ("010.0.0.1", "010.0.0.1"),
        ("1.2.3", "1.2.3"),
        ("10.0.0.0/", "10.0.0.0/"),
        ("/24", "/24"),
        ("10.0.0.1;10.0.0.2", "10.0.0.1;10.0.0.2"),
        ("10.0.0.1, 10.0.0.2, nope", "nope"),
        # A zone id never matches a client address, so it would silently lock the key out.
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("fe80::%1/64", "fe80::%1/64"),
        (["10.0.0.1", "256.0.0.1"], "256.0.0.1"),
    ],
)
def test_parse_allowed_ips_names_the_bad_entry(raw, bad_entry):
    with pytest.raises(ValidationError) as caught:
        parse_allowed_ips(raw)
    assert caught.value.messages == [bad_ip_message(bad_entry)]
    assert caught.value.code == "invalid_ip"


@pytest.mark.parametrize("item", [7, None, b"10.0.0.1"])
def test_parse_allowed_ips_refuses_non_text_list_items(item):
    with pytest.raises(ValidationError) as caught:
        parse_allowed_ips(["10.0.0.1", item])
    assert caught.value.messages == [f"Each IP restriction entry must be text, not {item!r}."]


def too_many_ips_message(count: str) -> str:
    return f"IP restriction can hold at most 1,000 addresses or ranges; this one has {count}."


@pytest.mark.parametrize("shape", [list, "\n".join, ", ".join])
def test_parse_allowed_ips_takes_up_to_1000_entries(shape):
    ips = distinct_ips(1000)
    assert parse_allowed_ips(shape(ips)) == ips


@pytest.mark.parametrize("shape", [list, "\n".join, ", ".join])
def test_parse_allowed_ips_refuses_1001_entries(shape):
    with pytest.raises(ValidationError) as caught:
        parse_allowed_ips(shape(distinct_ips(1001)))
    assert caught.value.messages == [too_many_ips_message("1,001")]
    assert caught.value.code == "too_many_ips"


def test_entries_count_as_typed_so_repeats_count_too():
    with pytest.raises(ValidationError) as caught:
        parse_allowed_ips(["10.0.0.1"] * 1001)
    assert caught.value.messages == [too_many_ips_message("1,001")]


def test_an_oversized_list_is_refused_by_its_count_before_any_entry_is_parsed():
    # Not one entry is an address: the count is the only thing that was looked at.
    with pytest.raises(ValidationError) as caught:
        parse_allowed_ips(["nope"] * 170_000)
    assert caught.value.messages == [too_many_ips_message("170,000")]


def test_validate_allowed_ips_wants_a_list():
    with pytest.raises(ValidationError) as caught:
        validate_allowed_ips("10.0.0.1")
    assert caught.value.messages == ["IP restriction must be a list of addresses."]
    validate_allowed_ips(["10.0.0.1", "2001:db8::/32"])
    with pytest.raises(ValidationError) as caught:
        validate_allowed_ips(["10.0.0.1", "example.com"])
    assert caught.value.messages == [bad_ip_message("example.com")]
    with pytest.raises(ValidationError) as caught:
        validate_allowed_ips(distinct_ips(1001))
    assert caught.value.messages == [too_many_ips_message("1,001")]


# --- rate limit -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ""),
        ("", ""),
        ("60/m", "60/m"),
        ("1/s", "1/s"),
        (" 60 / M ", "60/m"),
        ("10/H", "10/h"),
        ("5000/d", "5000/d"),
        ("\t60\n/m", "60/m"),
    ],
)
def test_normalise_rate_limit(raw, expected):
    assert normalise_rate_limit(raw) == expected


@pytest.mark.parametrize("value", ["", "60/m", "1/s", "10/h", "5000/d", "999999999/s"])
def test_validate_rate_limit_accepts(value):
    validate_rate_limit(value)


@pytest.mark.parametrize(
    "value",
    [
        "0/m",
        "00/m",
        "060/m",
        "-1/m",
        "60/x",
        "60/min",
        "60/M",  # the services lower-case first; the validator itself wants the canonical form
        "abc",
        "60",
        "/m",
        "60/",
        "1.5/s",
        "60 /m",
        "1000000000/s",
        "60/m/s",
    ],
)
def test_validate_rate_limit_refuses(value):
    with pytest.raises(ValidationError) as caught:
        validate_rate_limit(value)
    assert caught.value.messages == [RATE_LIMIT_MESSAGE]


# --- quota ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "0"),
        ("", "0"),
        ("   ", "0"),
        ("0", "0"),
        (0, "0"),
        ("25", "25"),
        (" 25.50 ", "25.50"),
        (Decimal("12.34"), "12.34"),
        (100, "100"),
        ("-1", "-1"),  # parsed here, refused by validate_quota
        # Whole cents, however many zeros follow, so the field's 2 decimal places accept them.
        ("12.500", "12.50"),
        ("1.230", "1.23"),
        ("5.", "5"),
        (".5", "0.5"),
        ("0012", "12"),
        ("0.01", "0.01"),
        ("0.0100", "0.01"),
        # Every spelling of zero is the one unlimited.
        ("0.000", "0"),
        ("-0", "0"),
        (Decimal("-0.00"), "0"),
    ],
)
def test_parse_quota(raw, expected):
    parsed = parse_quota(raw)
    assert isinstance(parsed, Decimal)
    assert str(parsed) == expected


def test_parse_quota_takes_the_largest_quota_the_field_holds():
    assert parse_quota("9999999999.99") == QUOTA_MAX
    field = ApiKey._meta.get_field("quota_limit_usd")
    whole_digits = field.max_digits - field.decimal_places
    assert Decimal("9" * whole_digits + "." + "9" * field.decimal_places) == QUOTA_MAX


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("1.234", "quota_below_cents"),
        ("1.2300001", "quota_below_cents"),
        ("25.001", "quota_below_cents"),
        ("10000000000", "quota_too_large"),
        ("9999999999.991", "quota_too_large"),
        ("1" * 30, "quota_too_large"),
        ("1" * 27 + ".000", "quota_too_large"),
        ("1e400", "invalid_quota"),
    ],
)
def test_parse_quota_says_cents_and_the_maximum_for_too_precise_or_too_large(raw, code):
    with pytest.raises(ValidationError) as caught:
        parse_quota(raw)
    assert caught.value.messages == [
        "Enter the quota limit in US dollars with at most 2 decimal places (whole cents), "
        "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means unlimited."
    ]
    assert caught.value.code == code


@pytest.mark.parametrize(
    "raw",
    [
        "abc",
        "1,000",
        "$5",
        "5 USD",
        "NaN",
        "Infinity",
        "-inf",
        "1e",
        1.5,
        True,
        [1],
        # Decimal() reads all of these; only plain ASCII decimal notation is a quota.
        "\u0665",  # Arabic-Indic five
        "\u0661\u0662.\u0665",
        "\uff11\uff12",  # fullwidth 12
        "1_000",
        "1e3",
        "1E-400",
        "1e-400",
        "+5",
        "- 5",
        "5.5.5",
        ".",
        "-",
        Decimal("NaN"),
        Decimal("Infinity"),
    ],
)
def test_parse_quota_refuses_anything_but_plain_decimal_notation(raw):
    with pytest.raises(ValidationError) as caught:
        parse_quota(raw)
    assert caught.value.messages == [
        "Enter the quota limit in US dollars with at most 2 decimal places (whole cents), "
        "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means unlimited."
    ]
    assert caught.value.code == "invalid_quota"


@pytest.mark.parametrize(
    "raw", ["0.001", "0.004", "0.005", "0.0099", "0." + "0" * 400 + "1", Decimal("1E-400")]
)
def test_a_positive_quota_below_a_cent_is_refused_not_made_unlimited(raw):
    with pytest.raises(ValidationError) as caught:
        parse_quota(raw)
    assert caught.value.messages == [
        "A quota limit below 0.01 US dollars would be stored as 0, which means unlimited. "
        "Enter at least 0.01, or 0 for unlimited."
    ]
    assert caught.value.code == "quota_below_a_cent"


def test_validate_quota():
    validate_quota(Decimal("0"))
    validate_quota(Decimal("0.01"))
    validate_quota(None)
    with pytest.raises(ValidationError) as caught:
        validate_quota(Decimal("-0.01"))
    assert caught.value.messages == ["Quota limit cannot be negative. Use 0 for unlimited."]


# --- groups ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [Decimal("0.0001"), Decimal("0.25"), Decimal("1.0"), None])
def test_validate_multiplier_accepts(value):
    validate_multiplier(value)


@pytest.mark.parametrize("value", [Decimal("0"), Decimal("-1")])
def test_validate_multiplier_refuses(value):
    with pytest.raises(ValidationError) as caught:
        validate_multiplier(value)
    assert caught.value.messages == [
        "The multiplier must be greater than 0 (for example 0.25 or 1.0)."
    ]


@pytest.mark.parametrize("value", [[], ["claude-*"], ["claude-*", "gpt-4o"]])
def test_validate_model_patterns_accepts(value):
    validate_model_patterns(value)


@pytest.mark.parametrize("value", ["claude-*", [""], ["  "], ["claude-*", 4], {"a": 1}, None])
def test_validate_model_patterns_refuses(value):
    with pytest.raises(ValidationError) as caught:
        validate_model_patterns(value)
    assert caught.value.messages == [
        "Models must be a list of model names or patterns such as claude-*."
    ]


@pytest.mark.parametrize("value", [["claude-\x00*"], ["gpt-4o", "\x00"], ["\x00claude"]])
def test_validate_model_patterns_refuses_null_characters(value):
    # PostgreSQL's jsonb refuses \u0000; caught here, it is a field error rather than a 500.
    with pytest.raises(ValidationError) as caught:
        validate_model_patterns(value)
    assert caught.value.messages == ["Null characters are not allowed."]
    assert caught.value.code == "null_characters_not_allowed"
