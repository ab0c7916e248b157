"""Prices with tax and discounts."""

TAX_RATE = 0.07
MAX_DISCOUNT = 50


def price_with_tax(price):
    return round(price * (1 + TAX_RATE), 2)


def apply_discount(price, percent):
    """Reduce a price by a percentage (at most MAX_DISCOUNT)."""
    if not 0 <= percent <= MAX_DISCOUNT:
        raise ValueError(f"discount must be between 0 and {MAX_DISCOUNT}")
    return round(price * (100 - percent) / 100, 2)
