from tally.inventory import Item, low_stock, total_units

ITEMS = [Item("B1", "Notebook", 3, 2.5), Item("B2", "Pencil", 40, 0.4)]


def test_total_units():
    assert total_units(ITEMS) == 43


def test_low_stock():
    assert [i.sku for i in low_stock(ITEMS, 5)] == ["B1"]
