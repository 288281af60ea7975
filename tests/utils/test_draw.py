import numpy as np

from detector.utils.draw import draw_boxes, label_colour


def test_draws_boxes_and_captions_without_touching_the_input():
    image = np.zeros((120, 160, 3), np.uint8)
    out = draw_boxes(image, np.array([[20, 30, 100, 90]], np.float32), ["cat"], scores=[0.87])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert image.max() == 0  # a copy is drawn on
    colour = np.array(label_colour("cat"))
    assert (out[60, 20] == colour).all() and (out[60, 100] == colour).all()  # left and right edges
    assert out[60, 60].max() == 0  # the inside stays untouched
    assert (out[10:30, 20:60] == colour).all(axis=-1).any()  # caption background above the box


def test_no_boxes_and_colours_are_stable():
    image = np.full((10, 10, 3), 7, np.uint8)
    assert np.array_equal(draw_boxes(image, np.zeros((0, 4)), []), image)
    assert label_colour("dog") == label_colour("dog")
