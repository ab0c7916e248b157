"""List products with fewer units than --threshold."""

import argparse

from _path import ROOT

from tally.inventory import load_stock, low_stock

parser = argparse.ArgumentParser()
parser.add_argument("--threshold", type=int, default=5)
args = parser.parse_args()
found = low_stock(load_stock(ROOT / "data" / "stock.csv"), args.threshold)
for item in found:
    print(f"{item.sku} {item.name}: {item.units} left")
print(f"{len(found)} products below {args.threshold} units.")
