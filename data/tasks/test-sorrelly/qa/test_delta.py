from sorrelly.delta import render_delta


def test_render_delta():
    assert render_delta([2, 1]) == [1, 2]
