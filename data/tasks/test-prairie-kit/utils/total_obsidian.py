"""Sum the amounts in datasets/obsidian.csv."""

import csv


def total_obsidian():
    with open('datasets/obsidian.csv') as f:
        return sum(int(r['amount']) for r in csv.DictReader(f))


print(total_obsidian())
