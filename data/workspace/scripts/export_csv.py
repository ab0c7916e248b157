"""Print the stock with prices including tax, as CSV."""

from _path import ROOT

from tally.inventory import load_stock
from tally.pricing import price_with_tax

print("sku,units,gross_price")
for item in load_stock(ROOT / "data" / "stock.csv"):
    print(f"{item.sku},{item.units},{price_with_tax(item.price):.2f}")
