"""COCO mask ("segm") evaluation next to box evaluation, with both backends."""
import json

import numpy as np
import pytest
import torch

from detector.data.masks import annotation_to_mask, mask_to_rle, rle_to_box, segmentation_to_rle
from detector.evaluation import (
    detections_to_coco_results,
    evaluate_boxes,
    evaluate_coco,
    evaluate_results,
    metrics_document,
)
from detector.evaluation.coco_checks import EvaluationError
from detector.evaluation.json_files import load_json

NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
# pycocotools 2.0.11 on cocoapi's fake segm results (coco_eval_reference/SOURCE.txt).
REFERENCE_SEGM = [
    0.3195452758576433, 0.5622883972521636, 0.29892653412086784, 0.3873740315997837,
    0.31018272403369485, 0.3269339071005138, 0.2682297225711534, 0.41544868114906375,
    0.4168394992198818, 0.4694498622754236, 0.37675922666197265, 0.3814715099715099,
]
BACKENDS = ["faster_coco_eval", "pycocotools"]


def _reference(coco_eval_reference):
    gt = load_json(coco_eval_reference / "instances_val2014_100.json", "gt")
    results = load_json(coco_eval_reference / "instances_val2014_fakesegm100_results.json", "results")
    return gt, results


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_give_the_reference_segm_stats(coco_eval_reference, backend):
    gt, results = _reference(coco_eval_reference)
    metrics = evaluate_coco(gt, results, "segm", backend=backend)
    assert [metrics[n] for n in NAMES] == pytest.approx(REFERENCE_SEGM, abs=1e-12)
    assert len(metrics["per_category"]) == 80


def test_a_box_next_to_the_mask_changes_nothing_in_segm(coco_eval_reference):
    """A mask model writes "bbox" and "segmentation"; pycocotools would then size detections
    by their box (Detectron2 drops the box for this reason). Here segm always uses the mask."""
    gt, results = _reference(coco_eval_reference)
    rng = np.random.default_rng(0)
    with_boxes = [{**det, "bbox": [v + float(rng.uniform(-20, 20)) for v in rle_to_box(det["segmentation"])]}
                  for det in results]
    for backend in BACKENDS:
        both = evaluate_results(gt, with_boxes, ("bbox", "segm"), backend=backend)
        assert set(both) == {"bbox", "segm"}
        assert [both["segm"][n] for n in NAMES] == pytest.approx(REFERENCE_SEGM, abs=1e-12), backend
        assert both["bbox"]["AP"] != pytest.approx(both["segm"]["AP"], abs=1e-3)  # the boxes are noisy
    # bbox of results_with_boxes equals evaluate_boxes on the same list (one list serves both).
    assert evaluate_boxes(gt, with_boxes)["AP"] == pytest.approx(both["bbox"]["AP"], abs=1e-12)


def test_faster_coco_eval_equals_pycocotools_per_category_segm(coco_eval_reference):
    gt, results = _reference(coco_eval_reference)
    rng = np.random.default_rng(1)
    for det in results:  # new scores: not only the published file
        det["score"] = float(rng.uniform())
    fast = evaluate_coco(gt, results, "segm", backend="faster_coco_eval")
    ref = evaluate_coco(gt, results, "segm", backend="pycocotools")
    assert [fast[n] for n in NAMES] == pytest.approx([ref[n] for n in NAMES], abs=1e-12)
    assert fast["per_category"].keys() == ref["per_category"].keys()
    for name, ap in ref["per_category"].items():
        assert fast["per_category"][name] == (None if ap is None else pytest.approx(ap, abs=1e-12)), name
    assert fast["AP"] != pytest.approx(REFERENCE_SEGM[0], abs=1e-4)  # the new scores did change the numbers


def _coco128_perfect_masks(coco128):
    gt = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    images = {image["id"]: image for image in gt["images"]}
    results = []
    for ann in gt["annotations"]:
        if ann["iscrowd"]:
            continue
        image = images[ann["image_id"]]
        rle = segmentation_to_rle(ann["segmentation"], image["height"], image["width"], ann["id"])
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0,
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
    return gt, results


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco128_polygons_as_perfect_detections_give_segm_ap_1(coco128, backend):
    gt, results = _coco128_perfect_masks(coco128)
    assert len(results) == 929  # every non-crowd polygon annotation (coco128/SOURCE.txt)
    json.dumps(results)
    metrics = evaluate_coco(gt, results, "segm", backend=backend)
    # Every AP, and recall with 100 detections per image (AR1/AR10 are capped by the count).
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "ARs", "ARm", "ARl"):
        assert metrics[name] == pytest.approx(1.0, abs=1e-12), name
    used = {c["name"] for c in gt["categories"] if any(a["category_id"] == c["id"] for a in gt["annotations"])}
    for name, ap in metrics["per_category"].items():
        assert ap == (pytest.approx(1.0, abs=1e-12) if name in used else None), name
    # One wrong mask (its object's mask moved far away) is found: AP drops below 1.
    moved = results[0]["segmentation"]
    image = next(i for i in gt["images"] if i["id"] == results[0]["image_id"])
    empty = np.zeros((image["height"], image["width"]), np.uint8)
    empty[:2, :2] = 1
    results[0] = {**results[0], "segmentation": mask_to_rle(empty)}
    assert moved != results[0]["segmentation"]
    assert evaluate_coco(gt, results, "segm", backend=backend)["AP"] < 1.0


def _tiny_gt():
    return {
        "images": [{"id": 7, "width": 60, "height": 40, "file_name": "a.jpg"}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 11, "name": "dog"}],
        "annotations": [
            # A triangle: its box is twice its mask, so box AP and mask AP can differ.
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 30, 20], "area": 300, "iscrowd": 0,
             "segmentation": [[10, 10, 40, 10, 10, 30]]},
            {"id": 2, "image_id": 7, "category_id": 11, "bbox": [45, 5, 10, 10], "area": 100, "iscrowd": 0,
             "segmentation": [[45, 5, 55, 5, 55, 15, 45, 15]]},
        ],
    }


def test_mask_model_outputs_become_rle_results_that_evaluate():
    gt = _tiny_gt()
    masks = np.stack([annotation_to_mask(ann, 40, 60) for ann in gt["annotations"]])
    probabilities = torch.from_numpy(masks).float()[:, None] * 0.9  # [N, 1, H, W], above 0.5 inside
    outputs = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0], [45.0, 5.0, 55.0, 15.0]]),
                "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2]), "masks": probabilities}]
    results = detections_to_coco_results(outputs, [7], {1: 3, 2: 11})
    assert [r["category_id"] for r in results] == [3, 11]
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    json.dumps(results)
    by_type = evaluate_results(gt, results, ("bbox", "segm"))
    assert by_type["bbox"]["AP"] == pytest.approx(1.0) and by_type["segm"]["AP"] == pytest.approx(1.0)
    # The right boxes with the wrong masks: box AP stays 1, mask AP falls.
    outputs[0]["masks"] = torch.flip(probabilities, dims=[3])
    flipped = evaluate_results(gt, detections_to_coco_results(outputs, [7], {1: 3, 2: 11}), ("bbox", "segm"))
    assert flipped["bbox"]["AP"] == pytest.approx(1.0)
    assert flipped["segm"]["AP"] == 0.0
    # Outputs without masks keep today's results exactly (no segmentation key).
    del outputs[0]["masks"]
    assert "segmentation" not in detections_to_coco_results(outputs, [7], {1: 3, 2: 11})[0]


def test_metrics_document_carries_a_segm_block_with_the_bbox_keys():
    gt = _tiny_gt()
    results = [{"image_id": 7, "category_id": 3, "score": 1.0, "bbox": [10, 10, 30, 20],
                "segmentation": mask_to_rle(annotation_to_mask(gt["annotations"][0], 40, 60))}]
    by_type = evaluate_results(gt, results, ("bbox", "segm"))
    document = metrics_document(by_type, 123)
    assert set(document) == {"iteration", "bbox", "segm"} and document["iteration"] == 123
    assert set(document["segm"]) == set(document["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_category"}
    # Box-only callers keep the old shape.
    assert metrics_document(by_type["bbox"], 5) == {"iteration": 5, "bbox": by_type["bbox"]}
    assert evaluate_results(gt, [], ("segm",))["segm"]["AP"] == 0.0


def test_bad_segm_inputs_get_clear_errors():
    gt = _tiny_gt()
    rle = mask_to_rle(np.ones((40, 60), np.uint8))
    with pytest.raises(EvaluationError, match="lacks the key\\(s\\) \\['segmentation'\\]"):
        evaluate_coco(gt, [{"image_id": 7, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}], "segm")
    with pytest.raises(EvaluationError, match="evaluate masks with iou type segm"):
        evaluate_coco(gt, [{"image_id": 7, "category_id": 3, "segmentation": rle, "score": 1.0}], "bbox")
    with pytest.raises(EvaluationError, match="segm results need an RLE"):
        evaluate_coco(gt, [{"image_id": 7, "category_id": 3, "segmentation": [[0, 0, 5, 0, 5, 5]], "score": 1.0}], "segm")
    small = mask_to_rle(np.ones((20, 60), np.uint8))
    with pytest.raises(EvaluationError, match="RLE of size \\[20, 60\\] .* which is 40x60"):
        evaluate_coco(gt, [{"image_id": 7, "category_id": 3, "segmentation": small, "score": 1.0}], "segm")
    no_masks = {**gt, "annotations": [{k: v for k, v in a.items() if k != "segmentation"} for a in gt["annotations"]]}
    with pytest.raises(EvaluationError, match="annotation id 1 has no segmentation"):
        evaluate_coco(no_masks, [{"image_id": 7, "category_id": 3, "segmentation": rle, "score": 1.0}], "segm")
    broken = {**gt, "annotations": [{**gt["annotations"][0], "segmentation": [[1, 2, 3]]}]}
    with pytest.raises(EvaluationError, match="Annotation id 1: segmentation polygon #0 has an odd number"):
        evaluate_coco(broken, [{"image_id": 7, "category_id": 3, "segmentation": rle, "score": 1.0}], "segm")
    # keypoints is an IoU type now (issue 28); a type neither library offers is still refused.
    with pytest.raises(EvaluationError, match="Unknown IoU type 'boundary'"):
        evaluate_results(gt, [], ("boundary",))


def test_segm_error_analysis_matches_cocoeval_by_mask(coco_eval_reference):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from detector.evaluation.analysis.errors import FP_KINDS
    from detector.evaluation.analysis.pipeline import analyze

    gt, results = _reference(coco_eval_reference)
    analysis = analyze(gt, results, iou_type="segm")
    assert analysis["settings"]["iou_type"] == "segm"
    assert [analysis["overall"][n] for n in NAMES] == pytest.approx(REFERENCE_SEGM, abs=1e-12)
    assert analysis["base_ap"] == pytest.approx(REFERENCE_SEGM[1], abs=1e-12)  # AP50
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(json.loads(json.dumps(results))), "segm")
        evaluator.evaluate()
    # The analysis's own matching by mask IoU decides what COCOeval decided at 0.5 (area all).
    matched = set()
    for entry in evaluator.evalImgs:
        if entry is not None and entry["aRng"] == evaluator.params.areaRng[0]:
            matched.update(d for d, m in zip(entry["dtIds"], entry["dtMatches"][0]) if m > 0)
    counts = analysis["counts"]
    assert counts["tp"] == len(matched) == 565
    assert counts["tp"] + counts["missed"] + counts["covered"] == counts["objects"] == 830
    assert counts["considered"] == counts["tp"] + sum(counts[k] for k in FP_KINDS) == len(results)
    # Box analysis of the same detections (their tight boxes) finds other numbers: masks were used.
    boxed = [{**det, "bbox": rle_to_box(det["segmentation"])} for det in results]
    assert analyze(gt, boxed)["counts"]["tp"] != counts["tp"]


def test_segm_error_kinds_and_crowd_use_the_masks():
    from detector.evaluation.analysis.pipeline import analyze

    gt = _tiny_gt()
    crowd = np.zeros((40, 60), np.uint8)
    crowd[25:40, 30:60] = 1
    gt["annotations"].append({"id": 3, "image_id": 7, "category_id": 3, "bbox": [30, 25, 30, 15], "area": 450,
                              "iscrowd": 1, "segmentation": mask_to_rle(crowd)})
    triangle = annotation_to_mask(gt["annotations"][0], 40, 60)
    inside_crowd = np.zeros((40, 60), np.uint8)
    inside_crowd[30:36, 40:50] = 1
    results = [
        {"image_id": 7, "category_id": 3, "score": 0.9, "segmentation": mask_to_rle(triangle)},
        # The same tight box as the triangle, but the mask is its mirror image: a poor mask.
        {"image_id": 7, "category_id": 3, "score": 0.8, "segmentation": mask_to_rle(triangle[::-1].copy())},
        {"image_id": 7, "category_id": 3, "score": 0.7, "segmentation": mask_to_rle(inside_crowd)},
    ]
    analysis = analyze(gt, results, iou_type="segm")
    counts = analysis["counts"]
    assert counts["tp"] == 1 and counts["ignored"] == 1 and counts["crowd_regions"] == 1
    assert counts["dupe"] + counts["loc"] == 1  # by box it would be a perfect duplicate; by mask IoU 1/3 -> loc
    assert counts["loc"] == 1
    per_class = {row["name"]: row for row in analysis["per_class"]}
    assert per_class["cat"]["AP50"] == pytest.approx(1.0)  # the true positive ranks first
    assert per_class["dog"]["AP50"] == 0.0 and per_class["dog"]["missed"] == 1


def test_segm_coco_oracles_on_a_constructed_case_give_the_exact_gains():
    """One image, a cat shaped as an L (its box is three times its mask) and a dog square, and
    five detections, one of each error kind by mask IoU. COCO AP50 averages over cat and dog:

        d1 cat 0.9  the L's vertical bar (mask IoU 80/184 = 0.43 with the L)   loc -> the L
        d2 dog 0.8  the square                                                   true positive
        d3 cat 0.7  a patch of background                                        bkg
        d4 dog 0.6  the L itself (IoU 1 with the cat)                            cls -> the L
        d5 dog 0.5  the square again                                             dupe

    Before any fix the cat is not found (AP 0) and the dog is (AP 1): AP50 = 0.5.
      loc: d1's mask moves onto the L -> the cat is found first: AP50 = 1.
      cls: the L's fix is d1 (the highest-scoring cls or loc error pointing at it, TIDE's rule),
           so d4 is removed rather than relabelled: 0.5.
      bkg, dupe: d3 and d5 rank below every true positive of their class: 0.5.
      false_negatives: the L (covered by d1's loc error, not missed) leaves the ground truth,
           and only the dog counts: 1. false_positives: all four false positives go: 0.5."""
    from detector.evaluation.analysis.pipeline import analyze

    ell = [[10, 10, 40, 10, 40, 14, 14, 14, 14, 30, 10, 30]]
    gt = {
        "images": [{"id": 7, "width": 60, "height": 40, "file_name": "a.jpg"}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 11, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 30, 20], "area": 184, "iscrowd": 0,
             "segmentation": ell},
            {"id": 2, "image_id": 7, "category_id": 11, "bbox": [45, 5, 10, 10], "area": 100, "iscrowd": 0,
             "segmentation": [[45, 5, 55, 5, 55, 15, 45, 15]]},
        ],
    }
    cat, dog = (annotation_to_mask(ann, 40, 60) for ann in gt["annotations"])
    bar, background = np.zeros((40, 60), np.uint8), np.zeros((40, 60), np.uint8)
    bar[10:30, 10:14] = 1
    background[32:38, 50:58] = 1
    assert cat.sum() == 184 and (bar & cat).sum() / (bar | cat).sum() == pytest.approx(80 / 184)

    def det(category_id, score, mask):
        return {"image_id": 7, "category_id": category_id, "score": score, "segmentation": mask_to_rle(mask)}

    results = [det(3, 0.9, bar), det(11, 0.8, dog), det(3, 0.7, background), det(11, 0.6, cat), det(11, 0.5, dog)]
    analysis = analyze(gt, results, iou_type="segm", dap_evaluator="coco")
    counts = {kind: analysis["errors"][kind]["count"] for kind in analysis["errors"]}
    assert counts == {"cls": 1, "loc": 1, "both": 0, "dupe": 1, "bkg": 1, "missed": 0}
    assert analysis["counts"]["tp"] == 1 and analysis["counts"]["covered"] == 1
    assert analysis["dap_base_ap"] == pytest.approx(0.5, abs=1e-12)
    fixed = {kind: analysis["errors"][kind]["ap_fixed"] for kind in analysis["errors"]}
    fixed.update({kind: analysis["special"][kind]["ap_fixed"] for kind in analysis["special"]})
    assert fixed == pytest.approx({"cls": 0.5, "loc": 1.0, "both": 0.5, "dupe": 0.5, "bkg": 0.5, "missed": 0.5,
                                   "false_positives": 0.5, "false_negatives": 1.0}, abs=1e-12)
    assert analysis["errors"]["loc"]["dap"] == pytest.approx(0.5, abs=1e-12)
