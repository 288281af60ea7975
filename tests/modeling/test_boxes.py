"""detector.modeling.boxes: the one home of box operations, eager and traced."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torchvision.ops import batched_nms as torchvision_batched_nms

from detector.modeling.boxes import (batched_nms, box_sizes_at_least, boxes_to_original, clip_boxes, clip_to_image,
                                     decode_boxes, encode_boxes, hflip_boxes, size_tensor)

BOXES = torch.tensor([[-5.0, 2.0, 30.0, 12.0], [3.0, -1.0, 8.0, 50.0], [10.0, 10.0, 10.5, 11.0]])


def test_clip_to_image_tensor_numpy_and_batched_agree():
    expected = torch.tensor([[0.0, 2.0, 20.0, 12.0], [3.0, 0.0, 8.0, 40.0], [10.0, 10.0, 10.5, 11.0]])
    assert torch.equal(clip_to_image(BOXES, (40, 20)), expected)
    assert torch.equal(clip_to_image(BOXES, torch.tensor([40, 20])), expected)
    clipped = clip_to_image(BOXES.numpy(), (40, 20))
    assert clipped.dtype == np.float32 and np.array_equal(clipped, expected.numpy())
    # Two images at once, each clipped to its own size.
    batched = clip_boxes(torch.stack([BOXES, BOXES]), size_tensor([(40, 20), (5, 9)]))
    assert torch.equal(batched[0], expected)
    assert torch.equal(batched[1], clip_to_image(BOXES, (5, 9)))


def test_size_filter_on_tensors_and_arrays():
    assert box_sizes_at_least(BOXES, 1.0).tolist() == [True, True, False]
    assert box_sizes_at_least(BOXES.numpy(), 0.5).tolist() == [True, True, True]


def test_hflip_maps_edges():
    flipped = hflip_boxes(BOXES, 20)
    assert flipped[:, 0].tolist() == [-10.0, 12.0, 9.5] and flipped[:, 2].tolist() == [25.0, 17.0, 10.0]
    assert torch.equal(flipped[:, 1::2], BOXES[:, 1::2])


def test_boxes_to_original_ints_or_tensors():
    resized, original = (320, 426), (480, 640)
    expected = BOXES * torch.tensor([640 / 426, 480 / 320, 640 / 426, 480 / 320], dtype=torch.float32)
    assert torch.allclose(boxes_to_original(BOXES, resized, original), expected)
    assert torch.equal(boxes_to_original(BOXES, resized, original),
                       boxes_to_original(BOXES, torch.tensor(resized), torch.tensor(original)))


def test_encode_decode_round_trip():
    references = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 50.0, 15.0]])
    targets = torch.tensor([[1.0, 2.0, 12.0, 18.0], [0.0, 4.0, 60.0, 16.0]])
    weights = (10.0, 10.0, 5.0, 5.0)
    deltas = encode_boxes(targets, references, weights)
    decoded = decode_boxes(deltas, references, weights, scale_clamp=4.0)
    assert decoded.shape == (2, 1, 4)
    assert torch.allclose(decoded[:, 0], targets, atol=1e-4)
    # Huge log-scales are clamped, not overflowed.
    assert torch.isfinite(decode_boxes(torch.full((1, 4), 1e4), references[:1], weights, 4.0)).all()


def test_batched_nms_traced_equals_eager_for_any_count():
    """Traced on 200 boxes, the graph also serves 37 boxes and none at all, with torchvision's keep."""
    def random_boxes(n, seed):
        generator = torch.Generator().manual_seed(seed)
        xy = torch.rand((n, 2), generator=generator) * 100
        wh = torch.rand((n, 2), generator=generator) * 30 + 1
        return (torch.cat([xy, xy + wh], 1), torch.rand(n, generator=generator),
                torch.randint(0, 3, (n,), generator=generator))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)   # torch.jit is deprecated; export still uses it
        traced = torch.jit.trace(lambda b, s, g: batched_nms(b, s, g, 0.5), random_boxes(200, 0), check_trace=False)
    for n, seed in ((200, 1), (37, 2), (0, 3)):
        boxes, scores, groups = random_boxes(n, seed)
        expected = torchvision_batched_nms(boxes, scores, groups, 0.5)
        assert torch.equal(batched_nms(boxes, scores, groups, 0.5), expected)
        assert torch.equal(traced(boxes, scores, groups), expected), n
