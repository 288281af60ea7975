"""Detectron2 model-zoo Faster R-CNN R50/R101-FPN weights, checked against Detectron2 itself.

The parameter names below are those Detectron2's modules register, read from its source
(github.com/facebookresearch/detectron2), not from this project's converter:

| names | where Detectron2 creates them |
| --- | --- |
| `backbone.bottom_up.*`, `backbone.fpn_*` | modeling/backbone/fpn.py `FPN.__init__`: `self.bottom_up = bottom_up`; `self.add_module("fpn_lateral{}".format(stage), lateral_conv)` and `"fpn_output{}"` with `stage = int(math.log2(in_strides[idx]))` (2..5 for res2..res5); `lateral_convs`/`output_convs` are plain lists (no names of their own); biases because `use_bias = norm == ""` (MODEL.FPN.NORM ""); `LastLevelMaxPool` (P6) has no parameters |
| `stem.conv1.weight`, `stem.conv1.norm.{weight,bias,running_mean,running_var}` | modeling/backbone/resnet.py `ResNet.__init__`: `self.stem = stem`; `BasicStem`: `self.conv1 = Conv2d(in, out, kernel_size=7, stride=2, padding=3, bias=False, norm=get_norm(norm, out))`, forward: relu, `max_pool2d(kernel_size=3, stride=2, padding=1)`; layers/wrappers.py `Conv2d.__init__`: `self.norm = norm`; layers/batch_norm.py `FrozenBatchNorm2d`: buffers `weight`, `bias`, `running_mean`, `running_var`, `eps=1e-5` (config/defaults.py `MODEL.RESNETS.NORM = "FrozenBN"`) |
| `res{2..5}.{i}.conv{1,2,3}.weight` (+ `.norm.*`), `res{k}.0.shortcut.weight` (+ `.norm.*`) | resnet.py `ResNet.__init__`: `name = "res" + str(i + 2)`, `self.add_module(name, nn.Sequential(*blocks))`; `BottleneckBlock`: `self.shortcut` only `if in_channels != out_channels` (the first block of each stage), `self.conv1` (1x1, `stride_1x1 = stride if stride_in_1x1`), `self.conv2` (3x3), `self.conv3` (1x1), all `bias=False` with a norm; `build_resnet_backbone`: `num_blocks_per_stage = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}`, first stride 1 in res2 and 2 after, `bottleneck_channels = num_groups * width_per_group` doubling per stage, out channels from `RES2_OUT_CHANNELS = 256` doubling; defaults.py `STRIDE_IN_1X1 = True`, `WIDTH_PER_GROUP = 64`, `STEM_OUT_CHANNELS = 64` |
| `proposal_generator.rpn_head.{conv,objectness_logits,anchor_deltas}.{weight,bias}` | modeling/meta_arch/rcnn.py `GeneralizedRCNN.__init__`: `self.backbone`, `self.proposal_generator`, `self.roi_heads`; proposal_generator/rpn.py `RPN`: `self.rpn_head = build_rpn_head(...)`; `StandardRPNHead`: `self.conv` (3x3, C -> C), `self.objectness_logits` (1x1, C -> A), `self.anchor_deltas` (1x1, C -> A * box_dim), forward `relu(self.conv(x))`; A = 3 from configs/Base-RCNN-FPN.yaml `ASPECT_RATIOS: [[0.5, 1.0, 2.0]]` and one size per level |
| `roi_heads.box_head.fc{1,2}.{weight,bias}` | roi_heads/roi_heads.py `StandardROIHeads.__init__`: `self.box_pooler` (no parameters), `self.box_head`, `self.box_predictor`; roi_heads/box_head.py `FastRCNNConvFCHead`: `self.add_module("fc{}".format(k + 1), fc)`, forward `torch.flatten(x, start_dim=1)` then `relu(layer(x))` per fc; Base-RCNN-FPN.yaml `NUM_FC: 2`, `POOLER_RESOLUTION: 7` (fc1 input C * 7 * 7) |
| `roi_heads.box_predictor.cls_score.*` (K + 1 rows), `.bbox_pred.*` (4K rows) | roi_heads/fast_rcnn.py `FastRCNNOutputLayers.__init__`: `self.cls_score = Linear(input_size, num_classes + 1)`, `self.bbox_pred = Linear(input_size, num_bbox_reg_classes * box_dim)`; `fast_rcnn_inference_single_image`: `scores = scores[:, :-1]` (background is the *last* column), class k's deltas in columns 4k..4k+3 |
| file layout `{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": True}` | checkpoint/detection_checkpoint.py `DetectionCheckpointer._load_file`: `if "model" in data and "__author__" in data: # file is in Detectron2 model zoo format`; `_load_model` reads `checkpoint.get("matching_heuristics")` and tolerates `pixel_mean`/`pixel_std` being absent ("they may be missing in old checkpoints"): files saved while those `GeneralizedRCNN` buffers were persistent carry them (meta_arch/rcnn.py now registers them with `persistent=False`); defaults.py: `PIXEL_MEAN = [103.530, 116.280, 123.675]` in BGR order ("BGR order, since INPUT.FORMAT defaults to BGR"), `PIXEL_STD = [1.0, 1.0, 1.0]` |

Mask R-CNN and Cascade R-CNN (MASK_HEAD_TABLE):

| names | where Detectron2 creates them |
| --- | --- |
| `roi_heads.mask_head.mask_fcn{1..4}.{weight,bias}`, `.deconv.*`, `.predictor.*` (K rows) | roi_heads/mask_head.py `MaskRCNNConvUpsampleHead.__init__`: `self.add_module("mask_fcn{}".format(k + 1), conv)` (3x3, padding 1, `bias=not conv_norm`, NUM_CONV 4 in Base-RCNN-FPN / mask configs), `self.deconv = ConvTranspose2d(cur_channels, conv_dims[-1], kernel_size=2, stride=2)`, `self.predictor = Conv2d(cur_channels, num_classes, kernel_size=1)` (`num_mask_classes = 1 if cls_agnostic_mask else num_classes`); forward: relu after every conv and after the deconv (`layers` applies `self.deconv_relu`); `mask_rcnn_inference`: sigmoid of the predicted class's channel |
| `roi_heads.box_head.{0,1,2}.fc{1,2}.*`, `roi_heads.box_predictor.{0,1,2}.{cls_score,bbox_pred}.*` | roi_heads/cascade_rcnn.py `CascadeROIHeads.__init__`: `self.box_head = nn.ModuleList(box_heads)`, `self.box_predictor = nn.ModuleList(box_predictors)`, one per `CASCADE_BBOX_REG_WEIGHTS` entry; `FastRCNNOutputLayers(..., cls_agnostic_bbox_reg=True)` (bbox_pred: 4 rows); configs/Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml: `NAME: CascadeROIHeads`, `CLS_AGNOSTIC_BBOX_REG: True`, `MASK_ON: True`; `_run_stage` divides the pooled features' gradient by the number of stages; inference averages the stages' scores |

GN and SyncBN recipes (NORM_TABLE; configs/Misc/mask_rcnn_R_50_FPN_3x_gn.yaml, _syncbn.yaml):

| names | where Detectron2 creates them |
| --- | --- |
| `*.norm.{weight,bias}` (GN), `*.norm.{weight,bias,running_mean,running_var,num_batches_tracked}` (SyncBN) on every ResNet conv, `fpn_lateral{k}`/`fpn_output{k}` (no `.bias`), `roi_heads.box_head.conv{1..4}` and `roi_heads.mask_head.mask_fcn{1..4}` (no `.bias`) | layers/batch_norm.py `get_norm`: "GN" -> `nn.GroupNorm(32, out_channels)`, "SyncBN" -> `NaiveSyncBatchNorm`/`nn.SyncBatchNorm`; fpn.py `use_bias = norm == ""`; box_head.py `FastRCNNConvFCHead`: `self.add_module("conv{}".format(k + 1), conv)` with `bias=not conv_norm`, then `fc1` (NUM_FC 1); the configs: `RESNETS.NORM`, `FPN.NORM`, `ROI_BOX_HEAD.NORM`, `ROI_MASK_HEAD.NORM` all GN (or SyncBN), `NUM_CONV: 4`, `NUM_FC: 1`, `STRIDE_IN_1X1: False` |

checkpoint/c2_model_loading.py, which renames Caffe2 (Detectron) model-zoo blobs into these
names, is a second source for the same suffixes; C2_NAMES lists some of its renamings.

The end-to-end checks compute Detectron2's forward pass (stem, bottlenecks with FrozenBN,
FPN, RPN head, box head) from the .pkl arrays with torch.nn.functional, as those modules
define it, and compare the converted model against it; then they change the file in known
ways (class permutation, BGR channel order, pixel mean) and check the detections change
exactly as they must.
"""
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detector.weights.checkpoint_io import load_checkpoint
from detector.modeling.build import build_model
from detector.weights.loading import load_model
from detector.weights.conversion.convert import convert_weights
from detector.weights.conversion.converted_config import compose_converted_config
from detector.weights.conversion.detectron2_conversion import convert_detectron2, detectron2_key_to_ours
from detector.weights.formats.restricted_pickle import RestrictedPickleError, load_restricted_pickle
from detector.weights.state_dicts import load_state_dict_strict

NUM_CLASSES = 80
# Narrow FPN and box head keep the files small (MODEL.FPN.OUT_CHANNELS and ROI_BOX_HEAD.FC_DIM
# are config values in Detectron2; the zoo uses 256 and 1024). The ResNet keeps its real widths.
FPN_DIM, FC_DIM = 32, 64
NUM_ANCHORS = 3
MASK_DIM = 16      # ROI_MASK_HEAD.CONV_DIM (256 in the zoo)
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}          # resnet.py num_blocks_per_stage
DETECTRON2_PIXEL_MEAN = np.array([103.530, 116.280, 123.675])  # defaults.py, BGR
NORM_BUFFERS = ("weight", "bias", "running_mean", "running_var")  # FrozenBatchNorm2d

# checkpoint/c2_model_loading.py: Caffe2 blob -> Detectron2 name (as convert_basic_c2_names and
# convert_c2_detectron_names rewrite it; align_and_update_state_dicts then matches it as a
# suffix of the model's key). Worked out by hand from those rules.
C2_NAMES = {
    "conv1_w": "stem.conv1.weight",                          # "^conv1\\." -> "stem.conv1."
    "res_conv1_bn_s": "stem.conv1.norm.weight",              # res.conv1.norm. -> conv1.norm. -> stem.
    "res2_0_branch1_w": "res2.0.shortcut.weight",            # .branch1. -> .shortcut.
    "res2_0_branch1_bn_b": "res2.0.shortcut.norm.bias",      # bn.b -> bn.bias -> norm.bias
    "res3_2_branch2a_w": "res3.2.conv1.weight",              # .branch2a. -> .conv1.
    "res4_5_branch2b_bn_s": "res4.5.conv2.norm.weight",      # bn.s -> norm.weight
    "res5_0_branch2c_w": "res5.0.conv3.weight",              # .branch2c. -> .conv3.
    "fpn_inner_res5_2_sum_w": "fpn_lateral5.weight",         # fpn_map: "fpn.inner." -> fpn_lateral{stage}
    "fpn_inner_res2_2_sum_lateral_b": "fpn_lateral2.bias",
    "fpn_res3_3_sum_w": "fpn_output3.weight",                # fpn_map: "fpn.res" -> fpn_output{stage}
    "conv_rpn_fpn2_w": "proposal_generator.rpn_head.conv.weight",
    "rpn_cls_logits_fpn2_b": "proposal_generator.rpn_head.objectness_logits.bias",
    "rpn_bbox_pred_fpn2_w": "proposal_generator.rpn_head.anchor_deltas.weight",
    "fc6_w": "box_head.fc1.weight",                          # "^fc6\\." -> "box_head.fc1."
    "fc7_b": "box_head.fc2.bias",
    "cls_score_w": "cls_score.weight",                       # background row moved from first to last
    "bbox_pred_b": "bbox_pred.bias",                         # background's 4 rows dropped
}


def detectron2_faster_rcnn_fpn_shapes(depth: int, fpn_dim: int = FPN_DIM, fc_dim: int = FC_DIM,
                                      num_classes: int = NUM_CLASSES, cascade: bool = False,
                                      mask: bool = False, norm: str = "FrozenBN", mask_dim: int = MASK_DIM,
                                      box_convs: int = 0) -> dict[str, tuple]:
    """Every parameter / buffer name (with its shape) of Detectron2's GeneralizedRCNN with
    build_resnet_fpn_backbone, StandardRPNHead and StandardROIHeads (FastRCNNConvFCHead with
    two fc, FastRCNNOutputLayers), as the module docstring's table derives them.
    `cascade`: CascadeROIHeads' three stages instead (MASK_HEAD_TABLE); `mask`: plus
    MaskRCNNConvUpsampleHead (same table). `norm` "GN" or "SyncBN" with `box_convs` 4: the
    Misc/*_gn and *_syncbn recipes (NORM_TABLE): that norm in the ResNet, the FPN and both heads,
    and a box head of `box_convs` convs (CONV_DIM = fpn_dim) then one fc."""
    shapes = {}
    buffers = {"FrozenBN": NORM_BUFFERS, "SyncBN": NORM_BUFFERS + ("num_batches_tracked",), "GN": ("weight", "bias")}

    def conv_with_norm(name, shape, kind=norm):
        shapes[f"{name}.weight"] = shape
        for buffer in buffers[kind]:
            shapes[f"{name}.norm.{buffer}"] = () if buffer == "num_batches_tracked" else (shape[0],)

    def head_conv(name, shape):
        """Conv2d(bias=not norm, norm=get_norm(NORM)) of the FPN and the heads."""
        if norm == "FrozenBN":   # the default recipes: no norm there (FPN.NORM, ROI_*_HEAD.NORM "")
            shapes[f"{name}.weight"], shapes[f"{name}.bias"] = shape, (shape[0],)
        else:
            conv_with_norm(name, shape)

    conv_with_norm("backbone.bottom_up.stem.conv1", (64, 3, 7, 7))
    in_channels, bottleneck, out_channels = 64, 64, 256
    for stage, blocks in zip((2, 3, 4, 5), BLOCKS[depth]):
        for block in range(blocks):
            prefix = f"backbone.bottom_up.res{stage}.{block}"
            if in_channels != out_channels:
                conv_with_norm(f"{prefix}.shortcut", (out_channels, in_channels, 1, 1))
            conv_with_norm(f"{prefix}.conv1", (bottleneck, in_channels, 1, 1))
            conv_with_norm(f"{prefix}.conv2", (bottleneck, bottleneck, 3, 3))
            conv_with_norm(f"{prefix}.conv3", (out_channels, bottleneck, 1, 1))
            in_channels = out_channels
        bottleneck, out_channels = bottleneck * 2, out_channels * 2
    for stage, channels in zip((2, 3, 4, 5), (256, 512, 1024, 2048)):
        head_conv(f"backbone.fpn_lateral{stage}", (fpn_dim, channels, 1, 1))
        head_conv(f"backbone.fpn_output{stage}", (fpn_dim, fpn_dim, 3, 3))
    for name, out in (("conv", fpn_dim), ("objectness_logits", NUM_ANCHORS), ("anchor_deltas", NUM_ANCHORS * 4)):
        size = 3 if name == "conv" else 1
        shapes[f"proposal_generator.rpn_head.{name}.weight"] = (out, fpn_dim, size, size)
        shapes[f"proposal_generator.rpn_head.{name}.bias"] = (out,)
    stages = [f"{k}." for k in range(3)] if cascade else [""]
    for k in range(1, box_convs + 1):   # FastRCNNConvFCHead: "conv{k}", 3x3, CONV_DIM channels
        head_conv(f"roi_heads.box_head.conv{k}", (fpn_dim, fpn_dim, 3, 3))
    for stage in stages:
        # CascadeROIHeads: cls_agnostic_bbox_reg, so 4 deltas per stage whatever the class.
        layers = {f"box_head.{stage}fc1": (fc_dim, fpn_dim * 7 * 7), f"box_head.{stage}fc2": (fc_dim, fc_dim),
                  f"box_predictor.{stage}cls_score": (num_classes + 1, fc_dim),
                  f"box_predictor.{stage}bbox_pred": (4 if cascade else num_classes * 4, fc_dim)}
        if box_convs:
            del layers["box_head.fc2"]   # NUM_FC 1
        for name, (out, inp) in layers.items():
            shapes[f"roi_heads.{name}.weight"] = (out, inp)
            shapes[f"roi_heads.{name}.bias"] = (out,)
    if mask:
        for n in range(1, 5):
            head_conv(f"roi_heads.mask_head.mask_fcn{n}", (mask_dim, fpn_dim if n == 1 else mask_dim, 3, 3))
        shapes["roi_heads.mask_head.deconv.weight"] = (mask_dim, mask_dim, 2, 2)   # ConvTranspose2d: [in, out, k, k]
        shapes["roi_heads.mask_head.deconv.bias"] = (mask_dim,)
        shapes["roi_heads.mask_head.predictor.weight"] = (num_classes, mask_dim, 1, 1)
        shapes["roi_heads.mask_head.predictor.bias"] = (num_classes,)
    return shapes


def test_caffe2_renamings_land_on_the_same_names():
    """Two Detectron2 sources agree: c2_model_loading.py's renamings are suffixes of the
    names the modules register (align_and_update_state_dicts matches them as suffixes)."""
    names = detectron2_faster_rcnn_fpn_shapes(50)
    for c2_name, suffix in C2_NAMES.items():
        matches = [n for n in names if n == suffix or n.endswith("." + suffix)]
        assert len(matches) == 1, (c2_name, suffix, matches)


@pytest.mark.parametrize("depth", [50, 101])
def test_every_detectron2_name_maps_one_to_one_onto_the_converted_model(depth):
    shapes = detectron2_faster_rcnn_fpn_shapes(depth)
    # Zero-stride arrays: the shapes without the memory; the converter materializes them.
    weights = {k: np.broadcast_to(np.float32(0.5), s) for k, s in shapes.items()}
    state, backbone, model_fields, num_classes, names = convert_detectron2(
        {"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True})
    assert backbone["depth"] == depth and backbone["stride_in_1x1"] and num_classes == NUM_CLASSES
    assert len(state) == len(shapes)   # nothing dropped, nothing merged
    assert {detectron2_key_to_ours(k) for k in shapes} == set(state)
    model = build_model(_weightless(compose_converted_config(backbone, model_fields, num_classes, names)))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == {detectron2_key_to_ours(k): s for k, s in shapes.items()}
    load_state_dict_strict(model, state, f"R{depth}-FPN")


def _weightless(config: dict):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(config)
    cfg.model.weights = None
    cfg.backbone.weights = None
    return cfg


def _random_weights(shapes: dict[str, tuple], seed: int = 0) -> dict[str, np.ndarray]:
    """Values of realistic size: He-scaled ResNet convolutions, FrozenBN near identity, and the
    heads drawn as Detectron2 initializes them (StandardRPNHead: normal std 0.01;
    FastRCNNOutputLayers: cls_score std 0.01, bbox_pred std 0.001), so that proposals and
    scores are spread out instead of saturated."""
    rng = np.random.default_rng(seed)
    head_std = {"proposal_generator.rpn_head.": 0.01, "roi_heads.box_predictor.cls_score.": 0.01,
                "roi_heads.box_predictor.bbox_pred.": 0.001}
    weights = {}
    for key, shape in shapes.items():
        std = next((v for prefix, v in head_std.items() if key.startswith(prefix)), None)
        if key.endswith("norm.weight"):
            value = rng.uniform(0.2, 0.6, shape)
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(("norm.bias", "norm.running_mean")) or (key.endswith(".bias") and len(shape) == 1):
            value = rng.normal(0.0, 0.1, shape)
        elif std is not None:
            value = rng.normal(0.0, std, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt((1.0 if key.startswith("roi_heads") else 2.0) / fan_in), shape)
        weights[key] = value.astype(np.float32)
    return weights


def _write_zoo_file(path, weights: dict, **extra) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"model": {**weights, **extra}, "__author__": "Detectron2 Model Zoo",
                     "matching_heuristics": True}, handle)


# Variant file: classes permuted, the first convolution's input channels reversed and a pixel mean
# of its own stored in the file (GeneralizedRCNN's pixel_mean / pixel_std buffers, which files saved while
# they were persistent carry).
PERMUTATION = np.random.default_rng(1).permutation(NUM_CLASSES)   # variant class k = base class P[k]
VARIANT_MEAN = DETECTRON2_PIXEL_MEAN + np.array([12.0, -7.0, 30.0])   # BGR


@pytest.fixture(scope="module")
def zoo_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("d2")
    weights = _random_weights(detectron2_faster_rcnn_fpn_shapes(50))
    variant = dict(weights)
    for name, group in (("cls_score", 1), ("bbox_pred", 4)):
        for suffix in ("weight", "bias"):
            key = f"roi_heads.box_predictor.{name}.{suffix}"
            rows = weights[key][: NUM_CLASSES * group].reshape(NUM_CLASSES, group, *weights[key].shape[1:])
            permuted = rows[PERMUTATION].reshape(NUM_CLASSES * group, *weights[key].shape[1:])
            variant[key] = np.concatenate([permuted, weights[key][NUM_CLASSES * group:]])   # background stays last
    variant["backbone.bottom_up.stem.conv1.weight"] = weights["backbone.bottom_up.stem.conv1.weight"][:, ::-1].copy()
    models = {}
    overrides = ["model.input.min_size_test=64", "model.input.max_size_test=64", "model.roi_heads.score_thresh=0.3"]
    for name, data, extra in (("base", weights, {}),
                              ("variant", variant, {"pixel_mean": VARIANT_MEAN.reshape(3, 1, 1).astype(np.float32),
                                                    "pixel_std": np.ones((3, 1, 1), np.float32)})):
        _write_zoo_file(folder / f"{name}.pkl", data, **extra)
        convert_weights("detectron2", folder / f"{name}.pkl", folder / f"{name}.pth")
        models[name] = load_model(folder / f"{name}.pth", overrides=overrides)
    assert load_checkpoint(folder / "base.pth")["category_ids"][:13] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14]
    return {k: torch.from_numpy(v) for k, v in weights.items()}, models


def _d2_conv(w, x, name, stride=1, padding=0):
    """layers/wrappers.py Conv2d: convolution, then its norm (FrozenBatchNorm2d or BatchNorm in eval
    mode, eps 1e-5; or GroupNorm with 32 groups, eps 1e-5)."""
    y = F.conv2d(x, w[f"{name}.weight"], w.get(f"{name}.bias"), stride, padding)
    if f"{name}.norm.weight" in w and f"{name}.norm.running_mean" not in w:   # get_norm("GN"): GroupNorm(32, C)
        return F.group_norm(y, 32, w[f"{name}.norm.weight"], w[f"{name}.norm.bias"], eps=1e-5)
    if f"{name}.norm.weight" in w:
        y = F.batch_norm(y, w[f"{name}.norm.running_mean"], w[f"{name}.norm.running_var"],
                         w[f"{name}.norm.weight"], w[f"{name}.norm.bias"], training=False, eps=1e-5)
    return y


def detectron2_features(w: dict, images: torch.Tensor, stride_in_1x1: bool = True) -> list[torch.Tensor]:
    """P2..P6 as Detectron2 computes them from already normalized BGR images."""
    x = F.max_pool2d(F.relu(_d2_conv(w, images, "backbone.bottom_up.stem.conv1", 2, 3)), 3, 2, 1)   # BasicStem
    res = {}
    for stage, blocks in zip((2, 3, 4, 5), BLOCKS[50]):
        for block in range(blocks):
            p = f"backbone.bottom_up.res{stage}.{block}"
            stride = 2 if block == 0 and stage > 2 else 1
            stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
            out = F.relu(_d2_conv(w, x, f"{p}.conv1", stride_1x1))
            out = F.relu(_d2_conv(w, out, f"{p}.conv2", stride_3x3, 1))
            out = _d2_conv(w, out, f"{p}.conv3")
            shortcut = _d2_conv(w, x, f"{p}.shortcut", stride) if f"{p}.shortcut.weight" in w else x
            x = F.relu(out + shortcut)                                # BottleneckBlock.forward
        res[stage] = x
    prev = _d2_conv(w, res[5], "backbone.fpn_lateral5")                # FPN.forward, top-down
    results = [_d2_conv(w, prev, "backbone.fpn_output5", 1, 1)]
    for stage in (4, 3, 2):
        prev = _d2_conv(w, res[stage], f"backbone.fpn_lateral{stage}") + F.interpolate(prev, scale_factor=2, mode="nearest")
        results.insert(0, _d2_conv(w, prev, f"backbone.fpn_output{stage}", 1, 1))
    return results + [F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0)]   # LastLevelMaxPool


def test_backbone_fpn_and_rpn_head_compute_what_detectron2_computes(zoo_models):
    w, models = zoo_models
    model = models["base"]
    rgb = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # GeneralizedRCNN.preprocess_image on Detectron2's input: BGR, 0..255, (x - mean) / std.
    bgr = (rgb.flip(1) * 255 - torch.tensor(DETECTRON2_PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1)) / 1.0
    torch.testing.assert_close(model.preprocessor.normalize(rgb[0]), bgr[0], rtol=1e-5, atol=1e-3)
    expected = detectron2_features(w, bgr)
    with torch.no_grad():
        ours = list(model.backbone(model.preprocessor.normalize(rgb[0])[None]).values())
        objectness, deltas = model.rpn.head(ours)
    assert len(ours) == len(expected) == 5
    for level, (a, b) in enumerate(zip(ours, expected)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max())), f"P{level + 2}"
    for level, feature in enumerate(expected):
        # StandardRPNHead.forward, then RPN.forward's layout: (N, H*W*A) and (N, H*W*A, 4).
        t = F.relu(_d2_conv(w, feature, "proposal_generator.rpn_head.conv", 1, 1))
        logits = _d2_conv(w, t, "proposal_generator.rpn_head.objectness_logits")
        anchor_deltas = _d2_conv(w, t, "proposal_generator.rpn_head.anchor_deltas")
        n, _, h, wd = anchor_deltas.shape
        ref_deltas = anchor_deltas.view(n, -1, 4, h, wd).permute(0, 3, 4, 1, 2).flatten(1, -2)
        # (our head runs on our features, equal to Detectron2's up to float rounding)
        torch.testing.assert_close(objectness[level], logits.permute(0, 2, 3, 1).flatten(1),
                                   rtol=1e-3, atol=1e-3 * float(logits.abs().max()))
        torch.testing.assert_close(deltas[level], ref_deltas, rtol=1e-3, atol=1e-3 * float(ref_deltas.abs().max()))


def test_box_head_and_predictor_compute_what_detectron2_computes(zoo_models):
    w, models = zoo_models
    model = models["base"]
    pooled = torch.randn(5, FPN_DIM, 7, 7, generator=torch.Generator().manual_seed(1))
    x = torch.flatten(pooled, start_dim=1)                            # FastRCNNConvFCHead.forward
    for fc in ("fc1", "fc2"):
        x = F.relu(F.linear(x, w[f"roi_heads.box_head.{fc}.weight"], w[f"roi_heads.box_head.{fc}.bias"]))
    d2_scores = F.linear(x, w["roi_heads.box_predictor.cls_score.weight"], w["roi_heads.box_predictor.cls_score.bias"])
    d2_deltas = F.linear(x, w["roi_heads.box_predictor.bbox_pred.weight"], w["roi_heads.box_predictor.bbox_pred.bias"])
    with torch.no_grad():
        logits, deltas = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
    # Detectron2: background last, deltas of the K classes; here: background is label 0.
    torch.testing.assert_close(logits[:, 0], d2_scores[:, NUM_CLASSES], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits[:, 1:], d2_scores[:, :NUM_CLASSES], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(deltas.view(5, -1, 4)[:, 1:], d2_deltas.view(5, -1, 4), rtol=1e-4, atol=1e-4)
    assert model.config.model.class_names[0] == "person" and len(model.config.model.class_names) == 80


def test_class_permutation_bgr_order_and_pixel_mean_change_the_detections_exactly(zoo_models):
    """The variant file permutes the classes, reverses conv1's input channels and carries its
    own BGR pixel mean m'. Detectron2 would give, for the BGR image flip(x) shifted by
    (reverse(m') - m) / 255, exactly the base model's detections on x -- with each label k
    renamed to the variant's class for it -- because reversed channels meet reversed weights and
    the shift turns m' back into m. A converter that read the mean in RGB order, flipped conv1
    or left the class rows in place would not."""
    _, models = zoo_models
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    shift = (VARIANT_MEAN[::-1] - DETECTRON2_PIXEL_MEAN) / 255.0
    x_variant = x.flip(0) + torch.tensor(shift.copy(), dtype=torch.float32).view(3, 1, 1)
    with torch.no_grad():
        base = models["base"]([x])[0]
        variant = models["variant"]([x_variant])[0]
    assert 5 <= len(base["scores"]) < 100   # well inside the score threshold and the per-image cap
    inverse = np.argsort(PERMUTATION)       # base class c -> variant class inverse[c]
    expected_labels = torch.from_numpy(inverse[(base["labels"] - 1).numpy()] + 1)
    a, b = torch.argsort(base["scores"], descending=True), torch.argsort(variant["scores"], descending=True)
    assert len(a) == len(b)
    torch.testing.assert_close(variant["scores"][b], base["scores"][a], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(variant["boxes"][b], base["boxes"][a], rtol=1e-4, atol=1e-3)
    assert torch.equal(variant["labels"][b], expected_labels[a])
    # The same image without the shift (the mean read in the wrong order) gives other scores.
    with torch.no_grad():
        unshifted = models["variant"]([x.flip(0)])[0]
    assert len(unshifted["scores"]) != len(a) or not torch.allclose(unshifted["scores"].sort().values,
                                                                     base["scores"].sort().values, atol=1e-3)


def test_converted_config_reproduces_detectron2(zoo_models):
    _, models = zoo_models
    model, variant = models["base"], models["variant"]
    cfg = model.config
    assert cfg.model.input.format == "BGR"
    np.testing.assert_allclose(list(cfg.model.input.pixel_mean), DETECTRON2_PIXEL_MEAN / 255)
    np.testing.assert_allclose(list(variant.config.model.input.pixel_mean), VARIANT_MEAN / 255)
    np.testing.assert_allclose(list(cfg.model.input.pixel_std), [1 / 255] * 3)
    assert cfg.backbone.stride_in_1x1 and cfg.backbone.depth == 50 and cfg.backbone.norm == "frozen_bn"
    assert model.backbone.body.layer2[0].conv1.stride == (2, 2)
    assert cfg.model.roi_heads.pooler_aligned and model.roi_heads.pooler.aligned
    assert cfg.model.roi_heads.predictor_layout == "detectron2"
    assert not cfg.model.anchor_generator.round_anchors
    assert list(cfg.model.anchor_generator.strides) == [4, 8, 16, 32, 64]


# ---------------------------------------------------------------- Mask R-CNN and Cascade (Mask) R-CNN
@pytest.mark.parametrize("cascade, mask, name", [(False, True, "mask_rcnn_fpn"), (True, False, "cascade_rcnn_fpn"),
                                                 (True, True, "cascade_mask_rcnn_fpn")])
def test_mask_and_cascade_names_map_one_to_one_onto_the_converted_model(cascade, mask, name):
    """COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_*, Misc/cascade_mask_rcnn_R_50_FPN_* and a
    cascade without masks: every name lands on a parameter of the model the config names."""
    shapes = detectron2_faster_rcnn_fpn_shapes(50, cascade=cascade, mask=mask)
    weights = {k: np.broadcast_to(np.float32(0.5), s) for k, s in shapes.items()}
    state, backbone, model_fields, num_classes, names = convert_detectron2(
        {"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True})
    assert model_fields["name"] == name and num_classes == NUM_CLASSES and names[-1] == "toothbrush"
    assert len(state) == len(shapes) and {detectron2_key_to_ours(k) for k in shapes} == set(state)
    config = compose_converted_config(backbone, model_fields, num_classes, names)
    model = build_model(_weightless(config))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == {detectron2_key_to_ours(k): s for k, s in shapes.items()}
    load_state_dict_strict(model, state, name)
    heads = config["model"]["roi_heads"]
    if mask:
        assert heads["mask_head"]["conv_dim"] == MASK_DIM and heads["mask_head"]["norm"] == ""
        assert heads["mask_deconv_dim"] == MASK_DIM and model.roi_heads.mask_predictor.layout == "detectron2"
        assert detectron2_key_to_ours("roi_heads.mask_head.mask_fcn4.bias") == "roi_heads.mask_head.3.0.bias"
    else:
        assert not hasattr(model.roi_heads, "mask_head") or model.roi_heads.mask_head is None
    if cascade:
        # Detectron2's cascade: its default SMOOTH_L1_BETA 0; the stages are conf/model/cascade_rcnn_fpn's.
        assert heads["smooth_l1_beta"] == 0.0 and heads["fg_iou_thresh"] == 0.5
        assert [s["iou_thresh"] for s in heads["refine_stages"]] == [0.6, 0.7]
        assert [list(s["bbox_reg_weights"]) for s in heads["refine_stages"]] == [[20.0, 20.0, 10.0, 10.0],
                                                                                  [30.0, 30.0, 15.0, 15.0]]
        assert len(model.roi_heads.box_predictor) == 3
    # What every Detectron2 conversion carries (as for Faster R-CNN).
    assert heads["predictor_layout"] == "detectron2" and heads["pooler_aligned"] and heads["pooler_sampling_ratio"] == 0
    assert heads["min_box_size"] == 0.0 and config["model"]["input"]["format"] == "BGR"
    assert config["backbone"]["stride_in_1x1"] and config["backbone"]["norm"] == "frozen_bn"
    assert config["backbone"]["freeze_at"] == 2


@pytest.fixture(scope="module")
def cascade_mask_model(tmp_path_factory):
    """A model-zoo-like Misc/cascade_mask_rcnn_R_50_FPN_3x file, written, converted and loaded."""
    folder = tmp_path_factory.mktemp("d2cascade")
    weights = _random_weights(detectron2_faster_rcnn_fpn_shapes(50, cascade=True, mask=True), seed=3)
    _write_zoo_file(folder / "cascade_mask.pkl", weights)
    convert_weights("detectron2", folder / "cascade_mask.pkl", folder / "cascade_mask.pth")
    model = load_model(folder / "cascade_mask.pth", overrides=["model.input.min_size_test=64",
                                                               "model.input.max_size_test=64",
                                                               "model.roi_heads.score_thresh=0.0"])
    return {k: torch.from_numpy(v) for k, v in weights.items()}, model


def test_cascade_stages_and_mask_head_compute_what_detectron2_computes(cascade_mask_model):
    w, model = cascade_mask_model
    assert model.config.model.name == "cascade_mask_rcnn_fpn"
    pooled = torch.randn(5, FPN_DIM, 7, 7, generator=torch.Generator().manual_seed(4))
    for stage in range(3):
        x = torch.flatten(pooled, start_dim=1)
        for fc in ("fc1", "fc2"):
            x = F.relu(F.linear(x, w[f"roi_heads.box_head.{stage}.{fc}.weight"], w[f"roi_heads.box_head.{stage}.{fc}.bias"]))
        scores = F.linear(x, w[f"roi_heads.box_predictor.{stage}.cls_score.weight"],
                          w[f"roi_heads.box_predictor.{stage}.cls_score.bias"])
        deltas = F.linear(x, w[f"roi_heads.box_predictor.{stage}.bbox_pred.weight"],
                          w[f"roi_heads.box_predictor.{stage}.bbox_pred.bias"])
        with torch.no_grad():
            logits, ours = model.roi_heads.box_predictor[stage](model.roi_heads.box_head[stage](pooled))
        # Background last there, first here; one class-agnostic box per proposal in both.
        torch.testing.assert_close(logits[:, 0], scores[:, NUM_CLASSES], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits[:, 1:], scores[:, :NUM_CLASSES], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours, deltas, rtol=1e-4, atol=1e-5)
    # MaskRCNNConvUpsampleHead.layers: relu(conv) x4, relu(deconv), predictor; K channels.
    features = torch.randn(5, FPN_DIM, 14, 14, generator=torch.Generator().manual_seed(5))
    x = features
    for n in range(1, 5):
        x = F.relu(F.conv2d(x, w[f"roi_heads.mask_head.mask_fcn{n}.weight"], w[f"roi_heads.mask_head.mask_fcn{n}.bias"],
                            padding=1))
    x = F.relu(F.conv_transpose2d(x, w["roi_heads.mask_head.deconv.weight"], w["roi_heads.mask_head.deconv.bias"], stride=2))
    expected = F.conv2d(x, w["roi_heads.mask_head.predictor.weight"], w["roi_heads.mask_head.predictor.bias"])
    with torch.no_grad():
        ours = model.roi_heads.mask_predictor(model.roi_heads.mask_head(features))
    assert ours.shape == (5, NUM_CLASSES + 1, 28, 28)
    # Label k (1..K) reads Detectron2's channel k-1.
    torch.testing.assert_close(ours[:, 1:], expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_converted_cascade_mask_model_detects_with_masks(cascade_mask_model):
    _, model = cascade_mask_model
    image = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        detections = model([image])[0]
    count = len(detections["boxes"])
    assert 0 < count <= 100 and detections["masks"].shape == (count, 1, 48, 64)
    assert float(detections["masks"].min()) >= 0.0 and float(detections["masks"].max()) <= 1.0
    assert bool((detections["labels"] >= 1).all() and (detections["labels"] <= NUM_CLASSES).all())


def test_new_class_count_reinitializes_every_stage_and_the_mask_logits():
    """--num-classes on a cascade mask file: the three stage predictors and the mask logits
    are fresh for K classes; the rest (box heads, mask convs, deconvolution) is the file's."""
    from detector.weights.conversion.assembly import detection_checkpoint

    shapes = detectron2_faster_rcnn_fpn_shapes(50, cascade=True, mask=True)
    weights = {k: np.broadcast_to(np.float32(0.5), s) for k, s in shapes.items()}
    state, backbone, model_fields, num_classes, names = convert_detectron2({"model": weights})
    checkpoint = detection_checkpoint(state, backbone, model_fields, num_classes, names, 3, "cascade.pkl")
    new = checkpoint["model"]
    for stage in range(3):
        assert new[f"roi_heads.box_predictor.{stage}.cls_score.weight"].shape == (4, FC_DIM)   # 3 classes + background
        assert new[f"roi_heads.box_predictor.{stage}.bbox_pred.weight"].shape == (4, FC_DIM)   # still class-agnostic
        assert torch.equal(new[f"roi_heads.box_head.{stage}.fc2.weight"], state[f"roi_heads.box_head.{stage}.fc2.weight"])
    assert new["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape == (3, MASK_DIM, 1, 1)
    assert not torch.equal(new["roi_heads.box_predictor.0.cls_score.weight"][:3],
                           state["roi_heads.box_predictor.0.cls_score.weight"][:3])
    for key in ("roi_heads.mask_predictor.conv5_mask.weight", "roi_heads.mask_head.3.0.weight"):
        assert torch.equal(new[key], state[key]), key
    assert checkpoint["config"]["model"]["num_classes"] == 3 and checkpoint["config"]["model"]["class_names"] is None


GN_DIM = 32   # GroupNorm(32, C) needs C divisible by 32: FPN, box-head and mask-head convs


@pytest.mark.parametrize("norm", ["GN", "SyncBN"])
def test_gn_and_syncbn_recipes_map_one_to_one_onto_the_converted_model(norm):
    """Misc/mask_rcnn_R_50_FPN_3x_gn and _syncbn (NORM_TABLE): the norm everywhere, 4conv1fc."""
    shapes = detectron2_faster_rcnn_fpn_shapes(50, fpn_dim=GN_DIM, mask=True, norm=norm, mask_dim=GN_DIM, box_convs=4)
    weights = {k: np.broadcast_to(np.float32(0.5), s) for k, s in shapes.items()}
    state, backbone, model_fields, num_classes, names = convert_detectron2({"model": weights})
    assert len(state) == len([k for k in shapes if not k.endswith("num_batches_tracked")])   # a step count only
    kind = "gn" if norm == "GN" else "bn"
    assert backbone["norm"] == ("gn" if norm == "GN" else "frozen_bn") and backbone["stride_in_1x1"] is False
    assert model_fields["name"] == "mask_rcnn_fpn_v2" and model_fields["rpn"]["conv_depth"] == 1
    assert model_fields["fpn"]["norm"] == model_fields["roi_heads"]["conv_norm"] == kind
    assert model_fields["roi_heads"]["mask_head"]["norm"] == kind
    assert model_fields["roi_heads"]["box_head"]["num_convs"] == 4
    model = build_model(_weightless(compose_converted_config(backbone, model_fields, num_classes, names)))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == {detectron2_key_to_ours(k, box_conv_norm=True): s for k, s in shapes.items()
                    if not k.endswith("num_batches_tracked")}
    load_state_dict_strict(model, state, f"{norm} R50-FPN")


@pytest.fixture(scope="module")
def gn_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("d2gn")
    shapes = detectron2_faster_rcnn_fpn_shapes(50, fpn_dim=GN_DIM, mask=True, norm="GN", mask_dim=GN_DIM, box_convs=4)
    weights = _random_weights(shapes, seed=3)
    _write_zoo_file(folder / "gn.pkl", weights)
    convert_weights("detectron2", folder / "gn.pkl", folder / "gn.pth")
    model = load_model(folder / "gn.pth", overrides=["model.input.min_size_test=64", "model.input.max_size_test=64"])
    return {k: torch.from_numpy(v) for k, v in weights.items()}, model


def test_gn_recipe_computes_what_detectron2_computes(gn_model):
    """GroupNorm in the ResNet (striding in the 3x3 conv), the FPN, the box head's four convs
    and the mask head's, computed as Detectron2's modules do from the .pkl arrays."""
    w, model = gn_model
    rgb = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    bgr = rgb.flip(1) * 255 - torch.tensor(DETECTRON2_PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    expected = detectron2_features(w, bgr, stride_in_1x1=False)
    with torch.no_grad():
        ours = list(model.backbone(model.preprocessor.normalize(rgb[0])[None]).values())
    for level, (a, b) in enumerate(zip(ours, expected)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max())), f"P{level + 2}"
    pooled = torch.randn(5, GN_DIM, 7, 7, generator=torch.Generator().manual_seed(1))
    x = pooled
    for k in range(1, 5):                                              # FastRCNNConvFCHead: convs, then fc1
        x = F.relu(_d2_conv(w, x, f"roi_heads.box_head.conv{k}", 1, 1))
    x = F.relu(F.linear(x.flatten(1), w["roi_heads.box_head.fc1.weight"], w["roi_heads.box_head.fc1.bias"]))
    masks = pooled.repeat(1, 1, 2, 2)                                  # 14x14 mask features
    for n in range(1, 5):                                              # MaskRCNNConvUpsampleHead's convs
        masks = F.relu(_d2_conv(w, masks, f"roi_heads.mask_head.mask_fcn{n}", 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(model.roi_heads.box_head(pooled), x, rtol=1e-4, atol=1e-4 * float(x.abs().max()))
        ours_masks = model.roi_heads.mask_head(pooled.repeat(1, 1, 2, 2))
    torch.testing.assert_close(ours_masks, masks, rtol=1e-4, atol=1e-4 * float(masks.abs().max()))
    with torch.no_grad():
        detections = model([rgb[0]])[0]
    assert {"boxes", "scores", "labels", "masks"} <= set(detections)


class _NormStatisticsFromInputs(torch.overrides.TorchFunctionMode):
    """While active, every eval-mode F.batch_norm first overwrites the running_mean and
    running_var it is given (the .pkl's arrays, shared with torch.from_numpy) with its input's
    per-channel mean and variance, as training would have left them: each norm then sees
    inputs of the scale its statistics describe (a trained model's), and the statistics
    differ per channel and from the norm's random weight and bias."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            x, running_mean, running_var = args[:3]
            running_mean.copy_(x.mean(dim=(0, 2, 3)))
            running_var.copy_(x.var(dim=(0, 2, 3)))
        return func(*args, **kwargs)


def _d2_norm_recipe_heads(w: dict, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Detectron2's 4conv1fc box head (FastRCNNConvFCHead: convs with their norms, then fc1)
    and the mask head's four convs (MaskRCNNConvUpsampleHead) on `pooled` 7x7 features (the
    mask head on them tiled to 14x14)."""
    x = pooled
    for k in range(1, 5):
        x = F.relu(_d2_conv(w, x, f"roi_heads.box_head.conv{k}", 1, 1))
    x = F.relu(F.linear(x.flatten(1), w["roi_heads.box_head.fc1.weight"], w["roi_heads.box_head.fc1.bias"]))
    masks = pooled.repeat(1, 1, 2, 2)
    for n in range(1, 5):
        masks = F.relu(_d2_conv(w, masks, f"roi_heads.mask_head.mask_fcn{n}", 1, 1))
    return x, masks


@pytest.fixture(scope="module")
def syncbn_model(tmp_path_factory):
    """Misc/mask_rcnn_R_50_FPN_3x_syncbn-like file: BatchNorm statistics measured on images
    (see _NormStatisticsFromInputs), weights and biases random, then written, converted, loaded."""
    folder = tmp_path_factory.mktemp("d2syncbn")
    shapes = detectron2_faster_rcnn_fpn_shapes(50, fpn_dim=GN_DIM, mask=True, norm="SyncBN", mask_dim=GN_DIM,
                                               box_convs=4)
    weights = _random_weights({k: s for k, s in shapes.items() if not k.endswith("num_batches_tracked")}, seed=5)
    w = {k: torch.from_numpy(v) for k, v in weights.items()}   # views: calibrating w writes `weights`
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(10)) * 255
    with torch.no_grad(), _NormStatisticsFromInputs():
        detectron2_features(w, images - torch.tensor(DETECTRON2_PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1),
                            stride_in_1x1=False)
        _d2_norm_recipe_heads(w, torch.randn(16, GN_DIM, 7, 7, generator=torch.Generator().manual_seed(11)))
    for key in [k for k in shapes if k.endswith("num_batches_tracked")]:
        weights[key] = np.array(90000, dtype=np.int64)   # BatchNorm's step count: carried, then dropped
    _write_zoo_file(folder / "syncbn.pkl", weights)
    convert_weights("detectron2", folder / "syncbn.pkl", folder / "syncbn.pth")
    model = load_model(folder / "syncbn.pth",
                       overrides=["model.input.min_size_test=64", "model.input.max_size_test=64"])
    return w, model


def test_syncbn_recipe_computes_what_detectron2_computes(syncbn_model):
    """BatchNorm (eval mode: running statistics, eps 1e-5) in the ResNet (striding in the 3x3
    conv), the FPN, the box head's four convs and the mask head's, computed as Detectron2's
    modules do from the .pkl arrays. Each norm's weight, bias, running_mean and running_var
    differ per channel and from one another, so a converter that put one in another's place
    gives other numbers."""
    w, model = syncbn_model
    norm = w["backbone.fpn_lateral3.norm.running_var"]
    assert not torch.allclose(norm, w["backbone.fpn_lateral3.norm.weight"], rtol=0.1)   # the swap would show
    assert float(norm.std() / norm.mean()) > 0.05                                          # distinct per channel
    assert model.config.model.name == "mask_rcnn_fpn_v2" and model.config.backbone.norm == "frozen_bn"
    rgb = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    bgr = rgb.flip(1) * 255 - torch.tensor(DETECTRON2_PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    expected = detectron2_features(w, bgr, stride_in_1x1=False)
    with torch.no_grad():
        ours = list(model.backbone(model.preprocessor.normalize(rgb[0])[None]).values())
    assert len(ours) == len(expected) == 5
    for level, (a, b) in enumerate(zip(ours, expected)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()),
                                   msg=lambda text, level=level: f"P{level + 2}: {text}")
    pooled = torch.randn(5, GN_DIM, 7, 7, generator=torch.Generator().manual_seed(1))
    boxes, masks = _d2_norm_recipe_heads(w, pooled)
    with torch.no_grad():
        ours_boxes = model.roi_heads.box_head(pooled)
        ours_masks = model.roi_heads.mask_head(pooled.repeat(1, 1, 2, 2))
    torch.testing.assert_close(ours_boxes, boxes, rtol=1e-4, atol=1e-4 * float(boxes.abs().max()))
    torch.testing.assert_close(ours_masks, masks, rtol=1e-4, atol=1e-4 * float(masks.abs().max()))
    with torch.no_grad():
        detections = model([rgb[0]])[0]
    assert {"boxes", "scores", "labels", "masks"} <= set(detections)


def test_unsupported_cascade_and_mask_layouts_are_refused():
    shapes = detectron2_faster_rcnn_fpn_shapes(50, cascade=True, mask=True)
    weights = {k: np.broadcast_to(np.float32(0.5), s) for k, s in shapes.items()}
    two_stages = {k: v for k, v in weights.items() if not k.startswith(("roi_heads.box_head.2.", "roi_heads.box_predictor.2."))}
    with pytest.raises(ValueError, match=r"stages \[0, 1\].*three stages"):
        convert_detectron2({"model": two_stages})
    agnostic_mask = dict(weights, **{"roi_heads.mask_head.predictor.weight": np.zeros((1, MASK_DIM, 1, 1), np.float32),
                                     "roi_heads.mask_head.predictor.bias": np.zeros((1,), np.float32)})
    with pytest.raises(ValueError, match="1 outputs for 80 classes.*class-specific masks"):
        convert_detectron2({"model": agnostic_mask})
    conv_stage = dict(weights, **{"roi_heads.box_head.0.conv1.weight": np.zeros((FPN_DIM, FPN_DIM, 3, 3), np.float32)})
    with pytest.raises(ValueError, match="unexpected key 'roi_heads.box_head.0.conv1.weight'"):
        convert_detectron2({"model": conv_stage})   # cascade stages with convs: not in the model zoo's R50s
    plain = {k: np.broadcast_to(np.float32(0.5), s) for k, s in detectron2_faster_rcnn_fpn_shapes(50).items()}
    convs_and_two_fc = dict(plain, **{"roi_heads.box_head.conv1.weight": np.zeros((FPN_DIM, FPN_DIM, 3, 3), np.float32),
                                      "roi_heads.box_head.conv1.bias": np.zeros((FPN_DIM,), np.float32)})
    with pytest.raises(ValueError, match="convs and more than one fc"):
        convert_detectron2({"model": convs_and_two_fc})


class _CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class _RunsAShellCommand:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [_CreatesAFile, _RunsAShellCommand])
def test_pickle_with_other_objects_is_refused_and_never_run(tmp_path, payload):
    victim = tmp_path / "created_by_pickle"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": {"backbone.fpn_lateral2.bias": np.zeros(3, np.float32), "x": payload(victim)}}, handle)
    with pytest.raises(RestrictedPickleError, match="Refusing to load"):
        load_restricted_pickle(path)
    with pytest.raises(RestrictedPickleError):
        convert_weights("detectron2", path, tmp_path / "out.pth")
    assert not victim.exists()
    assert not (tmp_path / "out.pth").exists()


def test_restricted_pickle_reads_numpy_and_plain_containers(tmp_path):
    data = {"model": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, "list": [1, 2.5, "x", (3, None)],
            "scalar": np.float32(1.5)}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"ok{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        loaded = load_restricted_pickle(path)
        np.testing.assert_array_equal(loaded["model"]["a"], data["model"]["a"])
        assert loaded["list"] == data["list"] and loaded["scalar"] == 1.5


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"model": {"a": np.array(["x", 1], dtype=object)}}))
    with pytest.raises(RestrictedPickleError, match="Python objects"):
        load_restricted_pickle(path)
