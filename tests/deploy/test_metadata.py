"""Every exported file carries its metadata, read back by the one reader: class names, category
ids, the input and its normalisation, the post-processing baked in (with --set overrides), the
checkpoint's config (YAML), its source and iteration. (The checkpoint: conftest's `exported`.)"""
from __future__ import annotations

import pytest

FORMATS = ("onnx", "openvino", "torchscript")


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_read_back(exported, fmt):
    from detector.deploy import read_metadata

    metadata = read_metadata(exported[fmt])
    assert metadata.format == fmt and metadata.precision == "f32"
    assert metadata.class_names == ["circle", "square", "triangle"]
    assert metadata.category_ids == [3, 7, 9] and metadata.iteration == 17
    assert metadata.source == str(exported["checkpoint"])
    assert metadata.outputs == ["boxes", "scores", "labels", "masks"]
    assert metadata.input["name"] == "image" and metadata.input["channels"] == "RGB"
    assert metadata.input["pixel_mean"] == [0.485, 0.456, 0.406] and metadata.input["min_size_test"] == 160
    assert metadata.postprocess["model.roi_heads.score_thresh"] == 0.2
    assert metadata.postprocess["model.roi_heads.nms_thresh"] == 0.5
    assert metadata.postprocess["model.roi_heads.detections_per_img"] == 30
    config = metadata.config()
    assert config.model.name == "mask_rcnn_fpn" and config.model.fpn.out_channels == 32
    assert config.backbone.name == "resnet18_narrow"


def test_set_overrides_are_baked_and_recorded(tmp_path, checkpoint_writer):
    """detector-export --set: the setting in the graph (fewer detections) and in the metadata."""
    import torch

    from detector.cli.export import main
    from detector.deploy import load_exported, read_metadata

    checkpoint = checkpoint_writer(tmp_path / "model.pth", "faster_rcnn_fpn", "model.roi_heads.score_thresh=0.0")
    output = tmp_path / "model.ts"
    assert main(["--weights", str(checkpoint), "--format", "torchscript", "--output", str(output),
                 "--set", "model.roi_heads.detections_per_img=5"]) == 0
    assert read_metadata(output).postprocess["model.roi_heads.detections_per_img"] == 5
    assert read_metadata(output).config().model.roi_heads.detections_per_img == 5
    detections = load_exported(output)([torch.rand(3, 100, 120, generator=torch.Generator().manual_seed(0))])[0]
    assert len(detections["scores"]) == 5


def test_file_without_metadata_is_refused_with_a_message(tmp_path):
    import torch

    from detector.deploy import read_metadata
    from detector.export import ExportableDetector, example_image, export_onnx
    from detector.export.metadata import MetadataError

    from detector.config import load_config
    from detector.modeling.build import build_model

    cfg = load_config(["backbone=resnet18_narrow", "model.num_classes=2", "model.fpn.out_channels=16",
                       "model.roi_heads.fc_dim=16", "model.input.min_size_test=64", "model.input.max_size_test=64"])
    torch.manual_seed(0)
    export_onnx(ExportableDetector(build_model(cfg).eval()), example_image(64, 80), tmp_path / "bare.onnx")
    with pytest.raises(MetadataError, match=r"bare\.onnx.*no detector metadata.*detector-export"):
        read_metadata(tmp_path / "bare.onnx")
