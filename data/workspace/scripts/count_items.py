"""Print how many units and products are in stock."""

from _path import ROOT

from tally.inventory import load_stock, total_units

items = load_stock(ROOT / "data" / "stock.csv")
print(f"{total_units(items)} units of {len(items)} products in stock.")
