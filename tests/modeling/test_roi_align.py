"""RoIAlign on CPU as a sparse-matrix product: it must give torchvision's values and gradients,
including for rois that are tiny, cross the border or lie outside the map."""
import pytest
import torch
from torchvision.ops import roi_align as torchvision_roi_align

from detector.modeling.roi_align import roi_align


def awkward_rois(count: int, image_size: int, batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * image_size
    size = torch.rand(count, 2, generator=generator) * image_size / 3 + 0.1
    boxes = torch.cat([corner, corner + size], dim=1)
    boxes[:6] = torch.tensor([[-10.0, -10.0, 5.0, 5.0],                 # crosses the top-left border
                              [image_size - 3.0, 2.0, image_size + 9.0, 7.0],   # crosses the right border
                              [0.0, 0.0, image_size - 1.0, image_size - 1.0],   # the whole map
                              [-9.0, -9.0, -6.0, -6.0],                    # outside: contributes nothing
                              [10.0, 10.0, 10.0, 10.0],                    # zero area
                              [3.3, 4.7, 3.9, 5.1]])                      # under one pixel
    image_index = torch.randint(0, batch, (count, 1), generator=generator).to(boxes.dtype)
    return torch.cat([image_index, boxes], dim=1)


@pytest.mark.parametrize("sampling_ratio, aligned, channels_last", [(2, False, True), (2, True, False),
                                                                    (1, False, False), (3, True, True)])
def test_gradient_matches_torchvision(sampling_ratio, aligned, channels_last):
    torch.manual_seed(0)
    features = torch.randn(2, 5, 13, 11, dtype=torch.float64)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    rois = awkward_rois(40, image_size=48, batch=2, seed=1).double()
    ours_input, reference_input = features.clone().requires_grad_(), features.clone().requires_grad_()

    ours = roi_align(ours_input, rois, (7, 7), 0.25, sampling_ratio, aligned)
    reference = torchvision_roi_align(reference_input, rois, (7, 7), 0.25, sampling_ratio, aligned)
    if channels_last:   # pooled by the sparse product: torchvision's values up to summation order
        torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    else:               # channel-first input keeps torchvision's forward kernel, bit for bit
        assert torch.equal(ours, reference)
    upstream = torch.randn_like(reference)
    (ours * upstream).sum().backward()
    (reference * upstream).sum().backward()
    assert reference_input.grad.abs().sum() > 0
    torch.testing.assert_close(ours_input.grad, reference_input.grad, rtol=1e-12, atol=1e-12)
    assert ours_input.grad.is_contiguous(memory_format=torch.channels_last if channels_last
                                         else torch.contiguous_format)


def test_float32_gradient_and_no_rois():
    features = torch.randn(1, 8, 20, 20, requires_grad=True)
    rois = awkward_rois(30, image_size=80, batch=1, seed=2)
    roi_align(features, rois, (7, 7), 0.25, 2, False).pow(2).sum().backward()
    reference_input = features.detach().clone().requires_grad_()
    torchvision_roi_align(reference_input, rois, (7, 7), 0.25, 2, False).pow(2).sum().backward()
    torch.testing.assert_close(features.grad, reference_input.grad, rtol=1e-5, atol=1e-5)

    features.grad = None
    empty = roi_align(features, rois[:0], (7, 7), 0.25, 2, False)
    assert empty.shape == (0, 8, 7, 7)
    (empty.sum() + features.sum()).backward()
    assert torch.equal(features.grad, torch.ones_like(features))


def test_channels_last_inference_in_float32_and_bfloat16():
    features = torch.randn(2, 16, 25, 34).contiguous(memory_format=torch.channels_last)
    rois = awkward_rois(50, image_size=130, batch=2, seed=4)
    with torch.inference_mode():
        torch.testing.assert_close(roi_align(features, rois, (7, 7), 0.25, 2, False),
                                   torchvision_roi_align(features, rois, (7, 7), 0.25, 2, False),
                                   rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = roi_align(features.bfloat16(), rois, (7, 7), 0.25, 2, False)
            reference = torchvision_roi_align(features.bfloat16(), rois, (7, 7), 0.25, 2, False)
    assert ours.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(ours, reference, rtol=1e-2, atol=1e-2)


def test_adaptive_sampling_and_channel_first_inference_use_torchvision_directly():
    features = torch.randn(1, 4, 10, 10, requires_grad=True)
    rois = awkward_rois(10, image_size=40, batch=1, seed=3)
    out = roi_align(features, rois, (7, 7), 0.25, 0, False)    # sampling_ratio 0: adaptive grid
    assert "Sparse" not in type(out.grad_fn).__name__
    with torch.no_grad():
        out = roi_align(features, rois, (7, 7), 0.25, 2, False)
        assert torch.equal(out, torchvision_roi_align(features, rois, (7, 7), 0.25, 2, False))
