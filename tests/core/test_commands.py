import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from core.commands import describe_validation_error

OPTIONS = {"quota_limit_usd": "--quota-usd"}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(ValidationError("Bad."), "Bad.", id="one-message"),
        pytest.param(ValidationError(["One.", "Two."]), "One.\nTwo.", id="message-list"),
        pytest.param(
            ValidationError({"quota_limit_usd": ["Too big.", "Too precise."]}),
            "--quota-usd: Too big.\n--quota-usd: Too precise.",
            id="field-with-an-option",
        ),
        pytest.param(
            ValidationError({"team": ["Unknown."]}), "team: Unknown.", id="field-without-one"
        ),
        pytest.param(
            ValidationError({NON_FIELD_ERRORS: ["Clash."], "quota_limit_usd": ["Negative."]}),
            "Clash.\n--quota-usd: Negative.",
            id="non-field-unlabelled",
        ),
    ],
)
def test_a_validation_error_becomes_lines_labelled_with_the_option(error, expected):
    assert describe_validation_error(error, OPTIONS) == expected
