"""Conversion progress: one type that adds up, one bpp formula."""


def test_progress_adds_and_subtracts():
    from pipeline.convert import Progress

    a, b = Progress(3, 1, 100, 40), Progress(2, 0, 60, 20)
    assert a + b == Progress(5, 1, 160, 60) and (a + b) - b == a
    assert sum([a, b], Progress()) == a + b
    assert (a + b).bpp == 8 * 160 / 60 and Progress().bpp == 0.0
