"""Print every product's price including tax."""

from _path import ROOT

from tally.inventory import load_stock
from tally.report import format_report

print(format_report(load_stock(ROOT / "data" / "stock.csv")))
