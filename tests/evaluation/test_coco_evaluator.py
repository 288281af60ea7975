import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from detector.evaluation import detections_to_coco_results, evaluate_boxes
from detector.evaluation.coco_checks import EvaluationError
from detector.evaluation.json_files import load_json

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
REFERENCE_STATS = [
    0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443,
    0.5193996948036719, 0.5013978986347466, 0.38681277964578054, 0.5936795762842003,
    0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982,
]
NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def test_evaluate_tool_reproduces_official_cocoapi_numbers(coco_eval_reference, tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "evaluate.py"),
         "--gt", str(coco_eval_reference / "instances_val2014_100.json"),
         "--results", str(coco_eval_reference / "instances_val2014_fakebbox100_results.json"),
         "--out", str(out)],
        capture_output=True, text=True, check=True,
    )
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.505" in proc.stdout
    assert "person" in proc.stdout  # the per-category table
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"iteration", "bbox"}
    assert metrics["bbox"]["AP"] == pytest.approx(0.5045806987249628, abs=1e-9)
    assert len(metrics["bbox"]["per_category"]) == 80


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_both_backends_give_the_reference_stats(coco_eval_reference, backend):
    gt = load_json(coco_eval_reference / "instances_val2014_100.json", "gt")
    results = load_json(coco_eval_reference / "instances_val2014_fakebbox100_results.json", "results")
    metrics = evaluate_boxes(gt, results, backend=backend)
    assert [metrics[n] for n in NAMES] == pytest.approx(REFERENCE_STATS, abs=1e-12)


def test_faster_coco_eval_equals_pycocotools_per_category(coco_eval_reference):
    gt = load_json(coco_eval_reference / "instances_val2014_100.json", "gt")
    results = load_json(coco_eval_reference / "instances_val2014_fakebbox100_results.json", "results")
    # Perturb the official results so the comparison is not only on the published file.
    rng = np.random.default_rng(0)
    for det in results:
        det["bbox"] = [float(v + rng.normal(0, 2)) for v in det["bbox"]]
        det["score"] = float(rng.uniform())
    fast = evaluate_boxes(gt, results, backend="faster_coco_eval")
    ref = evaluate_boxes(gt, results, backend="pycocotools")
    assert [fast[n] for n in NAMES] == pytest.approx([ref[n] for n in NAMES], abs=1e-12)
    assert fast["per_category"].keys() == ref["per_category"].keys()
    for name, ap in ref["per_category"].items():
        assert fast["per_category"][name] == (None if ap is None else pytest.approx(ap, abs=1e-12)), name
    assert fast["AP"] < 0.5045  # the noise did change the numbers


def _tiny_gt():
    return {
        "images": [{"id": 7, "width": 100, "height": 100, "file_name": "a.jpg"}, {"id": 9, "width": 100, "height": 100, "file_name": "b.jpg"}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 11, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 9, "category_id": 11, "bbox": [50, 50, 40, 30], "area": 1200, "iscrowd": 0},
        ],
    }


def test_results_use_dataset_category_ids_and_xywh():
    outputs = [
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[50.0, 50.0, 90.0, 80.0]]), "scores": torch.tensor([0.8]), "labels": torch.tensor([2])},
    ]
    results = detections_to_coco_results(outputs, [7, 9], {1: 3, 2: 11})
    assert results[0] == {"image_id": 7, "category_id": 3, "bbox": [10.0, 10.0, 40.0, 40.0], "score": pytest.approx(0.9)}
    assert results[1]["category_id"] == 11 and results[1]["bbox"] == [50.0, 50.0, 40.0, 30.0]
    metrics = evaluate_boxes(_tiny_gt(), results)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["per_category"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}
    # Swapping the mapping makes every detection wrong.
    wrong = detections_to_coco_results(outputs, [7, 9], {1: 11, 2: 3})
    assert evaluate_boxes(_tiny_gt(), wrong)["AP"] == 0.0


def test_empty_results_and_bad_results():
    assert evaluate_boxes(_tiny_gt(), [])["AP"] == 0.0
    with pytest.raises(EvaluationError, match="category_id 5"):
        evaluate_boxes(_tiny_gt(), [{"image_id": 7, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(EvaluationError, match="image_id 8"):
        evaluate_boxes(_tiny_gt(), [{"image_id": 8, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}])
