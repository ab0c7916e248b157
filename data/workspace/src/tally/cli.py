"""Command line entry point: tally count | tally low N."""

import argparse

from tally.inventory import load_stock, low_stock, total_units

STOCK_FILE = "data/stock.csv"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tally")
    parser.add_argument("command", choices=["count", "low"])
    parser.add_argument("threshold", nargs="?", type=int, default=5)
    args = parser.parse_args(argv)
    items = load_stock(STOCK_FILE)
    if args.command == "count":
        print(total_units(items))
    else:
        for item in low_stock(items, args.threshold):
            print(item.sku, item.name)
