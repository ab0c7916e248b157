from cactus_kit.rye import build_rye


def test_build_rye():
    assert build_rye([2, 1]) == [1, 2]
