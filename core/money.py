"""Money as people read it: "$1,234.50", one home for the portal's templates and the admin."""

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
# Sub-cent amounts (a single cheap request) would all read "$0.00"; show them to 1/100 cent.
SMALL_AMOUNT = Decimal("0.0001")


def usd(amount: Decimal | int | None) -> str:
    amount = Decimal(amount or 0)
    if 0 < abs(amount) < CENT:
        return f"${amount.quantize(SMALL_AMOUNT, rounding=ROUND_HALF_UP)}"
    return f"${amount.quantize(CENT, rounding=ROUND_HALF_UP):,}"
