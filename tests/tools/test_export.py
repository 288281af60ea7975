"""tools/export.py and detector.export: the exported ONNX / TorchScript detector gives the same
detections as the PyTorch model on real coco128 photos of three different sizes, from one file.

The model is a seeded random-init ResNet-18 detector at a small test size (short side 320,
long side at most 512) with score_thresh 0 and 50 detections per image, so every image yields
a full set of detections across several classes to compare.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]

BOX_TOL = 1e-3     # pixels of the input image
SCORE_TOL = 1e-4
DETECTIONS_PER_IMG = 50

# Landscape 480x640, portrait 640x481, and 428x640, whose resized short side 428 * (320 / 428)
# is one float32 rounding away from 319 (the exported resize must do that sum in float64).
IMAGES = ("000000000009.jpg", "000000000036.jpg", "000000000030.jpg")


def read_rgb(path: Path) -> torch.Tensor:
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float().div(255)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint, the model loaded back from it, the images and PyTorch's detections."""
    from tests.conftest import shared_dataset
    from detector.weights.checkpoint_io import save_checkpoint
    from detector.config import load_config
    from detector.modeling.build import build_model
    from detector.weights.loading import load_model

    root = shared_dataset("coco128") / "train2017"
    torch.manual_seed(0)
    cfg = load_config(["backbone=resnet18", "model.num_classes=3", "model.class_names=[a,b,c]",
                       "model.fpn.out_channels=64", "model.roi_heads.fc_dim=128",
                       "model.input.min_size_test=320", "model.input.max_size_test=512",
                       "model.roi_heads.score_thresh=0.0", f"model.roi_heads.detections_per_img={DETECTIONS_PER_IMG}"])
    path = tmp_path_factory.mktemp("export") / "model.pth"
    save_checkpoint({"model": build_model(cfg).state_dict(), "iteration": 0,
                     "config": OmegaConf.to_container(cfg, resolve=True)}, path)
    model = load_model(path)
    images = [read_rgb(root / name) for name in IMAGES]
    assert len({tuple(im.shape) for im in images}) == len(images), "the images must have different sizes"
    with torch.no_grad():
        reference = [model([image])[0] for image in images]
    return {"checkpoint": path, "model": model, "images": images, "reference": reference}


def match_detections(reference: dict, boxes, scores, labels) -> tuple[float, float]:
    """Every reference detection has its own exported counterpart with the same label, box
    within BOX_TOL and score within SCORE_TOL; returns the largest box and score differences.
    Counterparts are looked for at the same rank first; near-tied scores may swap ranks."""
    boxes, scores, labels = (torch.as_tensor(x) for x in (boxes, scores, labels))
    ref_boxes, ref_scores, ref_labels = reference["boxes"], reference["scores"], reference["labels"]
    assert boxes.shape == ref_boxes.shape, f"{len(boxes)} exported vs {len(ref_boxes)} PyTorch detections"
    assert labels.dtype == torch.int64
    assert torch.all(scores[:-1] >= scores[1:]), "exported detections are not sorted by score"
    box_diff = (ref_boxes[:, None, :] - boxes[None]).abs().amax(dim=-1)
    score_diff = (ref_scores[:, None] - scores[None]).abs()
    close = (box_diff <= BOX_TOL) & (score_diff <= SCORE_TOL) & (ref_labels[:, None] == labels[None])
    taken: set[int] = set()
    worst_box = worst_score = 0.0
    for i in range(len(ref_boxes)):
        candidates = [j for j in torch.nonzero(close[i])[:, 0].tolist() if j not in taken]
        assert candidates, (f"PyTorch detection {i} (label {int(ref_labels[i])}, score {float(ref_scores[i]):.6f}, "
                            f"box {ref_boxes[i].tolist()}) has no exported counterpart; nearest box differs by "
                            f"{float(box_diff[i].min()):.3g} px")
        j = min(candidates, key=lambda c: (c != i, float(score_diff[i, c])))
        taken.add(j)
        worst_box = max(worst_box, float(box_diff[i, j]))
        worst_score = max(worst_score, float(score_diff[i, j]))
    return worst_box, worst_score


def run_onnx(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]
    return lambda image: session.run(None, {"image": image.numpy()})


def run_torchscript(path: Path):
    import warnings

    import torchvision  # noqa: F401  (registers nms / roi_align for the loaded graph)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)   # torch.jit is deprecated, still works
        module = torch.jit.load(str(path))

    def run(image):
        with torch.no_grad():
            return module(image)
    return run


def check_all_images(setup, run, label: str) -> None:
    seen_labels = set()
    for image, reference in zip(setup["images"], setup["reference"]):
        assert len(reference["scores"]) >= 20, "too few detections for a meaningful comparison"
        boxes, scores, labels = run(image)
        box_diff, score_diff = match_detections(reference, boxes, scores, labels)
        seen_labels |= set(torch.as_tensor(labels).tolist())
        print(f"{label} {tuple(image.shape[1:])}: {len(scores)} detections, max |box diff| {box_diff:.2e} px, "
              f"max |score diff| {score_diff:.2e}")
    assert len(seen_labels) >= 2, "detections of a single class would not test the labels"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_detections_equal_pytorch_at_several_sizes(setup, fmt, tmp_path):
    from detector.export import ExportableDetector, example_image, export_onnx, export_torchscript

    model = setup["model"]
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    # Traced at 480x640; the images below are 480x640, 640x481 and 428x640.
    (export_onnx if fmt == "onnx" else export_torchscript)(ExportableDetector(model), example_image(), path)
    assert not any(m.training for m in model.modules()), "exporting switched the model out of eval mode"
    if fmt == "onnx":
        import onnx

        onnx.checker.check_model(str(path))
    check_all_images(setup, run_onnx(path) if fmt == "onnx" else run_torchscript(path), fmt)


def small_model(*overrides):
    from detector.config import load_config
    from detector.modeling.build import build_model

    torch.manual_seed(0)
    cfg = load_config(["backbone=resnet18", "model.num_classes=3", "model.fpn.out_channels=64",
                       "model.roi_heads.fc_dim=128", "model.input.min_size_test=320", "model.input.max_size_test=512",
                       f"model.roi_heads.detections_per_img={DETECTIONS_PER_IMG}", *overrides])
    return build_model(cfg).eval()


def test_onnx_detectron2_style_model(setup, tmp_path):
    """The other code paths a converted Detectron2 model takes: BGR input, fixed anchor strides,
    unrounded anchors, aligned RoIAlign (ONNX RoiAlign's half_pixel mode), background-last
    predictor, 4conv1fc GroupNorm box head, GroupNorm FPN, frozen BatchNorm."""
    from detector.export import ExportableDetector, example_image, export_onnx

    model = small_model("model.roi_heads.score_thresh=0.0", "model.input.format=BGR",
                        "model.anchor_generator.strides=[4,8,16,32,64]", "model.anchor_generator.round_anchors=false",
                        "model.roi_heads.pooler_aligned=true", "model.roi_heads.predictor_layout=detectron2",
                        "model.roi_heads.box_head._target_=detector.modeling.roi_heads.ConvFCBoxHead",
                        "+model.roi_heads.box_head.conv_dim=64", "+model.roi_heads.box_head.norm=gn",
                        "model.fpn.norm=gn", "backbone.norm=frozen_bn", "model.roi_heads.min_box_size=0")
    image = setup["images"][1]
    with torch.no_grad():
        reference = model([image])[0]
    path = tmp_path / "model.onnx"
    export_onnx(ExportableDetector(model), example_image(), path)
    assert len(reference["scores"]) >= 20
    box_diff, score_diff = match_detections(reference, *run_onnx(path)(image))
    print(f"onnx detectron2-style {tuple(image.shape[1:])}: max |box diff| {box_diff:.2e} px, "
          f"max |score diff| {score_diff:.2e}")


def test_no_detections_gives_empty_outputs(setup, tmp_path):
    """A score threshold nothing passes: both formats return empty tensors, not an error."""
    from detector.export import ExportableDetector, example_image, export_onnx, export_torchscript

    model = small_model("model.roi_heads.score_thresh=1.0")
    image = setup["images"][2]
    with torch.no_grad():
        assert len(model([image])[0]["scores"]) == 0
    wrapper = ExportableDetector(model)
    export_onnx(wrapper, example_image(), tmp_path / "model.onnx")
    export_torchscript(wrapper, example_image(), tmp_path / "model.pt")
    for run in (run_onnx(tmp_path / "model.onnx"), run_torchscript(tmp_path / "model.pt")):
        boxes, scores, labels = (torch.as_tensor(x) for x in run(image))
        assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
        assert labels.dtype == torch.int64


def test_cli_end_to_end(setup, tmp_path):
    output = tmp_path / "sub" / "model.pt"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), "--weights", str(setup["checkpoint"]),
                           "--format", "torchscript", "--output", str(output)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(output) in proc.stdout
    run = run_torchscript(output)
    box_diff, score_diff = match_detections(setup["reference"][1], *run(setup["images"][1]))
    assert box_diff <= BOX_TOL and score_diff <= SCORE_TOL


def test_cli_exports_the_masks_of_a_mask_checkpoint(tools_export, tmp_path):
    """The checkpoint's stored config says the model has a mask head: tools/export.py writes an
    ONNX graph with a fourth output, masks [N, 1, H, W], equal to the loaded model's."""
    from detector.weights.checkpoint_io import save_checkpoint
    from detector.config import load_config
    from detector.modeling.build import build_model
    from detector.weights.loading import load_model

    torch.manual_seed(0)
    cfg = load_config(["model=mask_rcnn_fpn", "backbone=resnet18_narrow", "model.num_classes=3",
                       "model.class_names=[a,b,c]", "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64",
                       "model.roi_heads.conv_dim=16", "model.input.min_size_test=160", "model.input.max_size_test=256",
                       "model.roi_heads.score_thresh=0.0", "model.roi_heads.detections_per_img=10",
                       "model.rpn.pre_nms_topk_test=300", "model.rpn.post_nms_topk_test=300"])
    model = build_model(cfg)
    torch.nn.init.normal_(model.roi_heads.mask_predictor.mask_fcn_logits.weight, std=1.0)   # masks that vary
    checkpoint, output = tmp_path / "mask.pth", tmp_path / "mask.onnx"
    save_checkpoint({"model": model.state_dict(), "iteration": 0,
                     "config": OmegaConf.to_container(cfg, resolve=True)}, checkpoint)
    assert tools_export.main(["--weights", str(checkpoint), "--format", "onnx", "--output", str(output)]) == 0

    import onnxruntime

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "masks"]
    image = torch.rand((3, 150, 230), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = load_model(checkpoint)([image])[0]
    boxes, scores, labels, masks = (torch.as_tensor(x) for x in session.run(None, {"image": image.numpy()}))
    assert masks.shape == (10, 1, 150, 230) and (expected["masks"] > 0.5).any()
    match_detections(expected, boxes, scores, labels)   # asserts boxes, scores and labels
    # Each eager detection's exported counterpart: the one with the nearest box.
    order = [int((expected["boxes"][i] - boxes).abs().amax(dim=1).argmin()) for i in range(len(boxes))]
    assert sorted(order) == list(range(len(boxes)))
    assert (masks[order] - expected["masks"]).abs().max() <= 1e-4


def test_cli_bad_format_and_missing_weights(tools_export, tmp_path, capsys):
    main = tools_export.main
    with pytest.raises(SystemExit) as exit_info:
        main(["--weights", str(tmp_path / "any.pth"), "--format", "tflite", "--output", str(tmp_path / "m")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err

    missing = tmp_path / "missing.pth"
    assert main(["--weights", str(missing), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    assert not (tmp_path / "m.onnx").exists()


def test_library_rejects_unknown_format(tmp_path):
    from detector.export import export_model

    with pytest.raises(ValueError, match="valid choices: onnx, torchscript"):
        export_model(tmp_path / "model.pth", "tflite", tmp_path / "m")


@pytest.fixture
def tools_export(monkeypatch):
    """tools/export.py imported as a module (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tools_export", REPO / "tools" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "tools_export", module)
    return module
