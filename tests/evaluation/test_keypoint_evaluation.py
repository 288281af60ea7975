"""The keypoint (OKS) evaluation reproduces pycocotools' reference numbers with both backends,
takes a dataset's own sigmas, and refuses ground truth or results it cannot compare."""
import json
import subprocess
import sys

import numpy as np
import pytest

from detector.evaluation.coco_checks import EvaluationError
from detector.evaluation.coco_evaluator import evaluate_coco, evaluate_results
from detector.evaluation.json_files import load_json

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
# ../shared/datasets/keypoints_eval_reference/SOURCE.txt
REFERENCE = {
    "AP": 0.5048844884488449, "AP50": 0.7227722772277227, "AP75": 0.6336633663366337,
    "APm": 0.46633663366336636, "APl": 0.7504950495049505, "AR": 0.5181818181818182,
    "AR50": 0.7272727272727273, "AR75": 0.6363636363636364, "ARm": 0.4666666666666666, "ARl": 0.75,
}


@pytest.fixture
def reference():
    folder = REPO.parent / "shared" / "datasets" / "keypoints_eval_reference"
    if not folder.exists():
        pytest.skip(f"shared dataset 'keypoints_eval_reference' not found at {folder} (only inside the project environment)")
    return folder, load_json(folder / "gt_dataset.json", "gt"), load_json(folder / "dt_dataset.json", "results")


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_both_backends_give_the_reference_keypoint_stats(reference, backend):
    _, gt, results = reference
    metrics = evaluate_coco(gt, results, "keypoints", backend=backend)
    assert set(metrics) == set(REFERENCE) | {"per_category"}
    for name, value in REFERENCE.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    assert metrics["per_category"]["person"] == pytest.approx(REFERENCE["AP"], abs=1e-9)


def test_evaluate_tool_writes_a_keypoints_block(reference, tmp_path):
    folder, _, _ = reference
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "evaluate.py"), "--gt", str(folder / "gt_dataset.json"),
         "--results", str(folder / "dt_dataset.json"), "--iou-type", "bbox", "keypoints", "--out", str(out)],
        capture_output=True, text=True, check=True)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ] = 0.505" in proc.stdout
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"iteration", "bbox", "keypoints"}
    assert {name: metrics["keypoints"][name] for name in REFERENCE} == pytest.approx(REFERENCE, abs=1e-9)
    assert "AR1" in metrics["bbox"] and "AR1" not in metrics["keypoints"]


def test_own_sigmas_change_the_numbers_alike_in_both_backends(reference):
    _, gt, results = reference
    # Wider sigmas forgive more: AP rises, and both libraries must read the sigmas given.
    wide = [0.2] * 17
    fast = evaluate_coco(gt, results, "keypoints", backend="faster_coco_eval", keypoint_sigmas=wide)
    ref = evaluate_coco(gt, results, "keypoints", backend="pycocotools", keypoint_sigmas=wide)
    assert fast["AP"] > REFERENCE["AP"] + 0.05
    for name in REFERENCE:
        assert fast[name] == pytest.approx(ref[name], abs=1e-12), name


def _tiny_gt(num_keypoints=4):
    names = [f"p{i}" for i in range(num_keypoints)]
    return {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "thing", "keypoints": names, "skeleton": []}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600.0,
                         "iscrowd": 0, "num_keypoints": num_keypoints,
                         "keypoints": [v for i in range(num_keypoints) for v in (10 + 10 * i, 20, 2)]}],
    }


def test_other_keypoints_need_their_sigmas():
    gt = _tiny_gt()
    result = {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 40, 40],
              "keypoints": list(gt["annotations"][0]["keypoints"])}
    with pytest.raises(EvaluationError, match="keypoint_sigmas"):
        evaluate_coco(gt, [result], "keypoints")
    metrics = evaluate_results(gt, [result], ("bbox", "keypoints"), keypoint_sigmas=[0.05] * 4)
    assert metrics["keypoints"]["AP"] == pytest.approx(1.0)
    with pytest.raises(EvaluationError, match="3 x 4 = 12"):
        evaluate_coco(gt, [{**result, "keypoints": [1, 2, 1]}], "keypoints", keypoint_sigmas=[0.05] * 4)
    with pytest.raises(EvaluationError, match="one sigma per"):
        evaluate_coco(gt, [result], "keypoints", keypoint_sigmas=[0.05] * 3)


def test_box_only_ground_truth_is_refused_for_keypoints():
    gt = _tiny_gt()
    gt["categories"][0].pop("keypoints")
    with pytest.raises(EvaluationError, match="no keypoints"):
        evaluate_coco(gt, [], "keypoints", keypoint_sigmas=[0.05] * 4)
    # One category with 4 keypoints and another with 3 cannot share one list of sigmas.
    gt = _tiny_gt()
    gt["categories"].append({"id": 2, "name": "other", "keypoints": ["a", "b", "c"]})
    with pytest.raises(EvaluationError, match="different numbers of keypoints"):
        evaluate_coco(gt, [], "keypoints", keypoint_sigmas=[0.05] * 4)
