import pytest

from tally.pricing import apply_discount, price_with_tax


def test_price_with_tax():
    assert price_with_tax(10.0) == 10.7


def test_discount_limit():
    with pytest.raises(ValueError):
        apply_discount(10.0, 80)
