"""Load the stock list and answer questions about it."""

import csv
from dataclasses import dataclass


@dataclass
class Item:
    sku: str
    name: str
    units: int
    price: float


def load_stock(path):
    """Read items from a CSV file with columns sku,name,units,price."""
    with open(path, newline="") as fh:
        return [Item(r["sku"], r["name"], int(r["units"]), float(r["price"])) for r in csv.DictReader(fh)]


def total_units(items):
    return sum(item.units for item in items)


def low_stock(items, threshold):
    """Items with fewer units than the threshold."""
    return [item for item in items if item.units < threshold]
