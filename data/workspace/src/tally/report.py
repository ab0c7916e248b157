"""Plain-text stock reports."""

from tally.pricing import price_with_tax


def format_report(items):
    lines = [f"{'SKU':<8}{'NAME':<22}{'UNITS':>6}{'PRICE':>9}"]
    for item in items:
        lines.append(f"{item.sku:<8}{item.name:<22}{item.units:>6}{price_with_tax(item.price):>9.2f}")
    return "\n".join(lines)
