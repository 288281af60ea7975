"""RoIAlign on CPU as a sparse-matrix product, torchvision's kernel everywhere else.

Every pooled value of RoIAlign is a fixed weighted sum of at most 4 * sampling_ratio**2
feature pixels, so pooling all rois is one product of a sparse matrix [pooled bins x pixels]
with the feature map viewed as [pixels x channels], and its gradient is the transposed
product. On CPU this beats torchvision's kernels, which walk one (roi, channel, bin) at a
time on one thread and need channel-first input:
- the backward takes about a fifth of an R50-FPN training step in torchvision's kernel and
  about a tenth of that as a sparse product;
- with channels-last features (the fast inference path) the forward reads the map in place
  instead of copying it to channel-first first, and runs about three times faster.
The results equal torchvision's up to float32 summation order. Channel-first features keep
torchvision's forward kernel, so the exact path (model.channels_last=false) stays
bit-identical to torchvision; CUDA and adaptive sampling (sampling_ratio <= 0) use
torchvision's kernels throughout.
"""
from __future__ import annotations

import torch
from torchvision.ops import roi_align as torchvision_roi_align


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int], spatial_scale: float,
              sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """torchvision.ops.roi_align(features [N, C, H, W], rois [R, 5] (batch index, x1, y1, x2, y2))."""
    if _use_sparse_product(features, sampling_ratio):
        return _SparseRoIAlign.apply(features, rois, tuple(output_size), spatial_scale, sampling_ratio, aligned)
    return torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)


def _is_channels_last(features: torch.Tensor) -> bool:
    return features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()


def _use_sparse_product(features: torch.Tensor, sampling_ratio: int) -> bool:
    if (features.device.type != "cpu" or features.dim() != 4 or sampling_ratio <= 0 or torch.jit.is_tracing()
            or torch.jit.is_scripting() or torch.compiler.is_compiling()):
        return False
    return _is_channels_last(features) or (features.requires_grad and torch.is_grad_enabled())


class _SparseRoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, rois, output_size, spatial_scale, sampling_ratio, aligned):
        # Only the rois are kept for the backward, which rebuilds the matrix: keeping the matrix
        # (about 20 bytes per pooled value) would raise the training step's peak memory.
        ctx.save_for_backward(rois)
        ctx.feature_layout = (features.shape, features.dtype, _is_channels_last(features))
        ctx.settings = (output_size, spatial_scale, sampling_ratio, aligned)
        if not _is_channels_last(features):
            return torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
        channels = features.shape[1]
        compute_dtype = _compute_dtype(features.dtype)
        weights = _matrix(rois, features.shape, compute_dtype, ctx.settings)
        with torch.autocast("cpu", enabled=False):
            pixels = features.detach().permute(0, 2, 3, 1).reshape(-1, channels).to(compute_dtype)   # a view
            pooled = torch.sparse.mm(weights.t(), pixels)                                   # [R*out_h*out_w, C]
        return pooled.view(len(rois), *output_size, channels).permute(0, 3, 1, 2).to(features.dtype).contiguous()

    @staticmethod
    def backward(ctx, grad_output):
        (rois,) = ctx.saved_tensors
        feature_shape, feature_dtype, channels_last = ctx.feature_layout
        batch, channels, height, width = feature_shape
        compute_dtype = _compute_dtype(feature_dtype)
        weights = _matrix(rois, feature_shape, compute_dtype, ctx.settings)
        with torch.autocast("cpu", enabled=False):
            # Rows of pooled bins, channels innermost, so the product streams whole channel vectors.
            bins = grad_output.to(compute_dtype).permute(0, 2, 3, 1).reshape(-1, channels)
            pixels = torch.sparse.mm(weights, bins)                                          # [N*H*W, C]
        grad = pixels.view(batch, height, width, channels).permute(0, 3, 1, 2).to(feature_dtype)
        if not channels_last:
            grad = grad.contiguous()
        return grad, None, None, None, None, None


def _matrix(rois: torch.Tensor, feature_shape, dtype: torch.dtype, settings: tuple) -> torch.Tensor:
    batch, _, height, width = feature_shape
    return interpolation_matrix(rois.to(dtype), (batch, height, width), *settings)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision features (autocast) are pooled in float32, as torchvision's autocast does."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def interpolation_matrix(rois: torch.Tensor, feature_size: tuple[int, int, int], output_size: tuple[int, int],
                         spatial_scale: float, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """Sparse [N*H*W, R*out_h*out_w] matrix W, in rois' dtype, with pooled = W.T @ pixels, following
    torchvision's sampling: sampling_ratio**2 points per bin, each bilinearly interpolated,
    points more than one pixel outside the map contribute nothing, averaged over the bin."""
    batch, height, width = feature_size
    pooled_h, pooled_w = output_size
    rois = rois.detach()
    offset = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * spatial_scale - offset, rois[:, 2] * spatial_scale - offset
    roi_w, roi_h = rois[:, 3] * spatial_scale - offset - x1, rois[:, 4] * spatial_scale - offset - y1
    if not aligned:   # legacy RoIAlign: every roi is at least one pixel wide and tall
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    row, row_weight = _axis_taps(y1, roi_h / pooled_h, pooled_h, sampling_ratio, height)
    col, col_weight = _axis_taps(x1, roi_w / pooled_w, pooled_w, sampling_ratio, width)
    count = len(rois)
    taps = 2 * sampling_ratio
    # Bilinear weights are separable: the taps of bin (i, j) are rows(i) x cols(j).
    row, row_weight = row.view(count, pooled_h, 1, taps, 1), row_weight.view(count, pooled_h, 1, taps, 1)
    col, col_weight = col.view(count, 1, pooled_w, 1, taps), col_weight.view(count, 1, pooled_w, 1, taps)
    image = rois[:, 0].to(torch.int64).view(count, 1, 1, 1, 1)
    pixel = (image * height + row) * width + col
    weight = row_weight * col_weight / sampling_ratio**2
    bin_index = torch.arange(count * pooled_h * pooled_w, device=rois.device).view(count, pooled_h, pooled_w, 1, 1)
    indices = torch.stack([pixel.reshape(-1), bin_index.expand_as(pixel).reshape(-1)])
    return torch.sparse_coo_tensor(indices, weight.reshape(-1), (batch * height * width, count * pooled_h * pooled_w),
                                   check_invariants=False)


def _axis_taps(start: torch.Tensor, bin_size: torch.Tensor, bins: int, sampling_ratio: int, size: int):
    """Along one axis: for each roi, bin and sample point, the two neighbouring pixel indices and
    their interpolation weights, as [R, bins, sampling_ratio * 2]."""
    dtype, device = start.dtype, start.device
    bin_offset = torch.arange(bins, dtype=dtype, device=device).view(1, -1, 1)
    sample_offset = torch.arange(sampling_ratio, dtype=dtype, device=device).view(1, 1, -1) + 0.5
    position = (start.view(-1, 1, 1) + bin_offset * bin_size.view(-1, 1, 1)
                + sample_offset * bin_size.view(-1, 1, 1) / sampling_ratio)
    inside = ((position >= -1.0) & (position <= size)).to(dtype)
    position = position.clamp(min=0.0)
    low = position.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    position = torch.where(at_edge, low, position)
    high = torch.where(at_edge, low, low + 1)
    fraction = position - low
    index = torch.stack([low, high], dim=-1).to(torch.int64)
    weight = torch.stack([1.0 - fraction, fraction], dim=-1) * inside[..., None]
    return index.flatten(2), weight.flatten(2)
