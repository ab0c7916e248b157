from sorrelly.yucca import save_yucca


def test_save_yucca():
    assert save_yucca([2, 1]) == [1, 2]
