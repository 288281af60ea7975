"""Detectron2 model-zoo Faster R-CNN R50-FPN weights: names, class order, config, safety."""
import pickle

import numpy as np
import pytest
import torch

from detector.checkpoint_io import load_checkpoint
from detector.modeling.build import load_model
from detector.weights.convert import convert_weights
from detector.weights.restricted_pickle import RestrictedPickleError, load_restricted_pickle

NUM_CLASSES = 80
# Narrow FPN and box head keep the file small; the key names are what matter here.
FPN_DIM, FC_DIM = 32, 64


def detectron2_r50_fpn_shapes() -> dict[str, tuple]:
    """The key names of Detectron2's COCO-Detection/faster_rcnn_R_50_FPN_*.pkl, with shapes."""
    shapes = {"backbone.bottom_up.stem.conv1.weight": (64, 3, 7, 7)}
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"backbone.bottom_up.stem.conv1.norm.{suffix}"] = (64,)
    in_channels = 64
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        width = 64 * 2 ** (stage - 2)
        out = width * 4
        for block in range(blocks):
            prefix = f"backbone.bottom_up.res{stage}.{block}"
            convs = {"conv1": (width, in_channels, 1, 1), "conv2": (width, width, 3, 3), "conv3": (out, width, 1, 1)}
            if block == 0:
                convs["shortcut"] = (out, in_channels, 1, 1)
            for conv, shape in convs.items():
                shapes[f"{prefix}.{conv}.weight"] = shape
                for suffix in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{prefix}.{conv}.norm.{suffix}"] = (shape[0],)
            in_channels = out
    for level, channels in zip((2, 3, 4, 5), (256, 512, 1024, 2048)):
        shapes[f"backbone.fpn_lateral{level}.weight"] = (FPN_DIM, channels, 1, 1)
        shapes[f"backbone.fpn_lateral{level}.bias"] = (FPN_DIM,)
        shapes[f"backbone.fpn_output{level}.weight"] = (FPN_DIM, FPN_DIM, 3, 3)
        shapes[f"backbone.fpn_output{level}.bias"] = (FPN_DIM,)
    shapes.update({
        "proposal_generator.rpn_head.conv.weight": (FPN_DIM, FPN_DIM, 3, 3),
        "proposal_generator.rpn_head.conv.bias": (FPN_DIM,),
        "proposal_generator.rpn_head.objectness_logits.weight": (3, FPN_DIM, 1, 1),
        "proposal_generator.rpn_head.objectness_logits.bias": (3,),
        "proposal_generator.rpn_head.anchor_deltas.weight": (12, FPN_DIM, 1, 1),
        "proposal_generator.rpn_head.anchor_deltas.bias": (12,),
        "roi_heads.box_head.fc1.weight": (FC_DIM, FPN_DIM * 7 * 7),
        "roi_heads.box_head.fc1.bias": (FC_DIM,),
        "roi_heads.box_head.fc2.weight": (FC_DIM, FC_DIM),
        "roi_heads.box_head.fc2.bias": (FC_DIM,),
        "roi_heads.box_predictor.cls_score.weight": (NUM_CLASSES + 1, FC_DIM),
        "roi_heads.box_predictor.cls_score.bias": (NUM_CLASSES + 1,),
        "roi_heads.box_predictor.bbox_pred.weight": (NUM_CLASSES * 4, FC_DIM),
        "roi_heads.box_predictor.bbox_pred.bias": (NUM_CLASSES * 4,),
    })
    return shapes


# Where each Detectron2 name must land in this project's state dict.
EXPECTED_DESTINATIONS = {
    "backbone.bottom_up.stem.conv1.weight": "backbone.body.conv1.weight",
    "backbone.bottom_up.stem.conv1.norm.running_var": "backbone.body.bn1.running_var",
    "backbone.bottom_up.res2.0.shortcut.weight": "backbone.body.layer1.0.downsample.0.weight",
    "backbone.bottom_up.res2.0.shortcut.norm.bias": "backbone.body.layer1.0.downsample.1.bias",
    "backbone.bottom_up.res3.2.conv2.weight": "backbone.body.layer2.2.conv2.weight",
    "backbone.bottom_up.res4.5.conv3.norm.running_mean": "backbone.body.layer3.5.bn3.running_mean",
    "backbone.bottom_up.res5.0.conv1.weight": "backbone.body.layer4.0.conv1.weight",
    "backbone.fpn_lateral2.weight": "backbone.fpn.lateral_convs.0.0.weight",
    "backbone.fpn_lateral5.bias": "backbone.fpn.lateral_convs.3.0.bias",
    "backbone.fpn_output3.weight": "backbone.fpn.output_convs.1.0.weight",
    "proposal_generator.rpn_head.conv.weight": "rpn.head.convs.0.weight",
    "proposal_generator.rpn_head.objectness_logits.bias": "rpn.head.objectness.bias",
    "proposal_generator.rpn_head.anchor_deltas.weight": "rpn.head.deltas.weight",
    "roi_heads.box_head.fc1.weight": "roi_heads.box_head.fc1.weight",
    "roi_heads.box_head.fc2.bias": "roi_heads.box_head.fc2.bias",
    "roi_heads.box_predictor.cls_score.weight": "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.bbox_pred.bias": "roi_heads.box_predictor.bbox_pred.bias",
}


@pytest.fixture(scope="module")
def detectron2_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    weights = {k: rng.standard_normal(s).astype(np.float32) for k, s in detectron2_r50_fpn_shapes().items()}
    for key, value in weights.items():
        if key.endswith("running_var"):
            weights[key] = np.abs(value) + 0.5
    path = tmp_path_factory.mktemp("d2") / "model_final.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, handle)
    output = path.with_name("converted.pth")
    convert_weights("detectron2", path, output)
    assert load_checkpoint(output)["category_ids"][:13] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14]
    return weights, load_model(output)


def test_every_tensor_lands_where_it_belongs(detectron2_file):
    weights, model = detectron2_file
    state = model.state_dict()
    # All 4x4 + stems etc: every source tensor is used exactly once, nothing is left over.
    assert len(weights) == len([k for k in state if not k.endswith("num_batches_tracked")])
    for source, destination in EXPECTED_DESTINATIONS.items():
        assert torch.equal(state[destination], torch.from_numpy(weights[source])), source
    for source, value in weights.items():
        assert any(torch.equal(t, torch.from_numpy(value)) for t in state.values() if t.shape == value.shape), source


def test_class_order_background_last_becomes_background_first(detectron2_file):
    weights, model = detectron2_file
    x = torch.randn(3, FC_DIM)
    logits, deltas = model.roi_heads.box_predictor(x)
    cls_w, cls_b = (torch.from_numpy(weights[f"roi_heads.box_predictor.cls_score.{n}"]) for n in ("weight", "bias"))
    box_w, box_b = (torch.from_numpy(weights[f"roi_heads.box_predictor.bbox_pred.{n}"]) for n in ("weight", "bias"))
    d2_logits, d2_deltas = x @ cls_w.T + cls_b, x @ box_w.T + box_b
    torch.testing.assert_close(logits[:, 0], d2_logits[:, NUM_CLASSES])          # background
    torch.testing.assert_close(logits[:, 1:], d2_logits[:, :NUM_CLASSES])        # label k <-> D2 class k-1
    torch.testing.assert_close(deltas.view(3, -1, 4)[:, 1:], d2_deltas.view(3, -1, 4))
    assert model.config.model.class_names[0] == "person" and len(model.config.model.class_names) == 80


def test_converted_config_reproduces_detectron2(detectron2_file):
    _, model = detectron2_file
    cfg = model.config
    assert cfg.model.input.format == "BGR"
    np.testing.assert_allclose(list(cfg.model.input.pixel_mean), [103.53 / 255, 116.28 / 255, 123.675 / 255])
    np.testing.assert_allclose(list(cfg.model.input.pixel_std), [1 / 255] * 3)
    assert cfg.backbone.stride_in_1x1 and cfg.backbone.depth == 50 and cfg.backbone.norm == "frozen_bn"
    assert model.backbone.body.layer2[0].conv1.stride == (2, 2)
    assert cfg.model.roi_heads.pooler_aligned and model.roi_heads.pooler.aligned
    assert cfg.model.roi_heads.predictor_layout == "detectron2"
    assert not cfg.model.anchor_generator.round_anchors
    assert list(cfg.model.anchor_generator.strides) == [4, 8, 16, 32, 64]
    # BGR flip and 0..255 scaling: a pure-red RGB pixel becomes (0 - 103.53, 0 - 116.28, 255 - 123.675).
    red = torch.zeros(3, 1, 1)
    red[0] = 1.0
    torch.testing.assert_close(model.preprocessor.normalize(red).flatten(),
                               torch.tensor([-103.53, -116.28, 255 - 123.675]), rtol=1e-5, atol=1e-3)
    model.preprocessor.min_size_test = 64   # small, to run end to end quickly
    with torch.no_grad():
        assert len(model([torch.rand(3, 64, 80)])) == 1


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
