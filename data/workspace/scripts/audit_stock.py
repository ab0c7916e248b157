"""Check the stock file for impossible values."""

from _path import ROOT

from tally.inventory import load_stock


def find_negative(items):
    return [item for item in items if item.units < 0 or item.price <= 0]


bad = find_negative(load_stock(ROOT / "data" / "stock.csv"))
print("audit passed: no negative units or prices" if not bad else f"audit failed: {len(bad)} bad rows")
