from cactus_kit.mole import sort_mole


def test_sort_mole():
    assert sort_mole([2, 1]) == [1, 2]
