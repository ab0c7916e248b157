"""Print the SKUs in stock, one per line."""

from _path import ROOT

from tally.inventory import load_stock

for item in load_stock(ROOT / "data" / "stock.csv"):
    print(item.sku)
