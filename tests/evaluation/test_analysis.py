"""Error analysis (detector/evaluation/analysis): TIDE kinds, oracle dAP, confusion matrix.

The hand-built scenes have answers known by construction. COCO's AP at IoU 0.5 reads the
interpolated precision at the 101 recall thresholds 0, 0.01, ..., 1 and averages them: with
2 objects of which one is found by a detection ranked first, recall 0.5 is reached with
precision 1, so AP = 51/101 (thresholds 0..0.50) -- and so on in each case below.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from detector.evaluation.analysis.box_iou import coco_box_iou
from detector.evaluation.analysis.confusion import confusion_matrix
from detector.evaluation.analysis.errors import ERROR_KINDS, FP_KINDS, classify_errors
from detector.evaluation.analysis.inputs import prepare_inputs
from detector.evaluation.analysis.matching import coco_greedy_match
from detector.evaluation.analysis.oracle import ORACLES
from detector.evaluation.analysis.pipeline import analyze

A, B = 1, 2  # category ids
ANCHOR_BOX = [50.0, 50.0, 30.0, 30.0]
OBJECT_BOX = [10.0, 10.0, 40.0, 40.0]


def scene(objects, detections, images=(1, 2)):
    """COCO gt dict and results list from (image, category, box[, iscrowd]) / (image, category, box, score)."""
    gt = {
        "images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in images],
        "categories": [{"id": A, "name": "cat"}, {"id": B, "name": "dog"}],
        "annotations": [
            {"id": n + 1, "image_id": o[0], "category_id": o[1], "bbox": list(o[2]), "area": o[2][2] * o[2][3],
             "iscrowd": o[3] if len(o) > 3 else 0}
            for n, o in enumerate(objects)
        ],
    }
    results = [{"image_id": d[0], "category_id": d[1], "bbox": list(d[2]), "score": d[3]} for d in detections]
    return gt, results


def test_coco_box_iou_plain_and_crowd():
    iou = coco_box_iou(np.array([[0, 0, 10, 10.0]]), np.array([[5, 0, 10, 10.0], [0, 0, 100, 100.0], [20, 20, 5, 5.0]]),
                       np.array([False, True, False]))
    # 50 / (100 + 100 - 50); inside a crowd: intersection over the detection's own area; disjoint: 0.
    np.testing.assert_allclose(iou, [[50 / 150, 1.0, 0.0]])


def test_greedy_match_prefers_real_objects_and_lets_crowds_absorb_many():
    # Two detections; a real object (IoU 0.6) and a crowd region (IoU 0.9) for each.
    iou = np.array([[0.6, 0.9], [0.55, 0.9]])
    match, ignored = coco_greedy_match(iou, np.array([False, True]), 0.5)
    # The first takes the real object although the crowd overlaps more; the second falls on the crowd.
    assert match.tolist() == [0, 1] and ignored.tolist() == [False, True]


def test_perfect_detections_have_ap_1_and_no_errors():
    objects = [(1, A, ANCHOR_BOX), (2, A, OBJECT_BOX), (2, B, [60.0, 5.0, 20.0, 30.0])]
    gt, results = scene(objects, [(o[0], o[1], o[2], 0.9 - 0.1 * n) for n, o in enumerate(objects)])
    analysis = analyze(gt, results, backend="pycocotools")
    assert analysis["base_ap"] == 1.0 and analysis["overall"]["AP"] == 1.0
    assert analysis["counts"]["tp"] == 3 and analysis["counts"]["considered"] == 3
    for kind in ERROR_KINDS:
        assert analysis["errors"][kind]["count"] == 0
        assert analysis["errors"][kind]["dap"] == 0.0
    assert analysis["special"]["false_positives"]["dap"] == 0.0


# Each case: one object (image 2) and one detection showing one kind of error (plus, for the
# duplicate, the detection that found the object first), next to an "anchor" object in image 1
# found by a detection scored 0.5, below every error. Expected AP at IoU 0.5 before any fix
# and after each oracle (missing oracles: unchanged), derived in the comments.
CASES = {
    # The cat is called a dog (IoU 1). Cats: 2 objects, only the anchor found -> 51/101; dogs
    # have no object, so they do not count. Relabelled, the detection finds the cat -> 1.
    "cls": ([(2, A, OBJECT_BOX)], [(2, B, OBJECT_BOX, 0.8)], 51 / 101, {"cls": 1.0, "false_positives": 51 / 101,
                                                                        "false_negatives": 1.0}),
    # Right class, IoU 0.3 (40x12 inside 40x40). Ranked first, the FP halves the precision at
    # recall 0.5: 0.5 * 51/101. Snapped onto the object it is a true positive -> 1. Perfect
    # recall alone (the cat dropped from the ground truth) leaves the FP first: 1/2 -> 0.5.
    "loc": ([(2, A, OBJECT_BOX)], [(2, A, [10.0, 10.0, 40.0, 12.0], 0.8)], 25.5 / 101,
            {"loc": 1.0, "false_positives": 51 / 101, "false_negatives": 0.5}),
    # A dog detection with IoU 0.3 on the cat: the cat is missed (nothing points at it with IoU
    # >= 0.5 nor with the right class). Removing the dog changes no cat -> 51/101; dropping the
    # missed cat from the ground truth leaves 1 cat found first -> 1.
    "both": ([(2, A, OBJECT_BOX)], [(2, B, [10.0, 10.0, 40.0, 12.0], 0.8)], 51 / 101,
             {"missed": 1.0, "false_negatives": 1.0}),
    # Two detections on the cat (IoU 1 and 0.95) above the anchor: TP, FP, TP -> precision 1 up
    # to recall 0.5, then 2/3 to recall 1: (51 + 50 * 2/3) / 101. Without the duplicate -> 1.
    "dupe": ([(2, A, OBJECT_BOX)], [(2, A, OBJECT_BOX, 0.9), (2, A, [10.0, 10.0, 40.0, 38.0], 0.8)],
             (51 + 50 * 2 / 3) / 101, {"dupe": 1.0, "false_positives": 1.0}),
    # A single background FP (IoU 0 with everything) ranked above the only true positive:
    # precision 1/2 at every recall -> 0.5; removed -> 1.
    "bkg": ([], [(2, A, [60.0, 60.0, 20.0, 20.0], 0.8)], 0.5, {"bkg": 1.0, "false_positives": 1.0}),
    # Nothing detects the cat: 51/101; TIDE's recall fix drops it from the ground truth -> 1.
    "missed": ([(2, A, OBJECT_BOX)], [], 51 / 101, {"missed": 1.0, "false_negatives": 1.0}),
}
# The same cases with TIDE's own AP (the default dap_evaluator), where it differs from COCO's:
# TIDE averages over the classes with objects *or* detections, so the dog class of the cls and
# both cases (a detection, no object) counts with AP 0 and halves the mean: 25.5/101. Relabelled,
# the dog detection leaves no dog point and the class drops out -> 1. Perfect precision keeps
# the false positive as a point scored 0 (the class still counts) -> 25.5/101; perfect recall
# leaves 1 cat found first -> (1 + 0) / 2. Removing the "both" dog -> cats alone, 51/101.
TIDE_CASES = {
    "cls": (25.5 / 101, {"cls": 1.0, "false_positives": 25.5 / 101, "false_negatives": 0.5}),
    "both": (25.5 / 101, {"both": 51 / 101, "missed": 0.5, "false_negatives": 0.5}),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_one_error_of_each_kind(kind):
    objects, detections, base_ap, fixed_ap = CASES[kind]
    gt, results = scene([(1, A, ANCHOR_BOX)] + objects, [(1, A, ANCHOR_BOX, 0.5)] + detections)
    table = classify_errors(prepare_inputs(gt, results))
    error_index = len(results) - 1  # the last detection is the erroneous one
    expected_kinds = ["tp"] + (["tp"] if kind == "dupe" else []) + ([kind] if kind != "missed" else [])
    assert table.det_kind.tolist() == expected_kinds
    if kind in ("cls", "loc", "dupe"):
        assert table.det_target[error_index] == 1  # the cat of image 2 (annotation #1)
    # The cat is missed only when no cls/loc error points at it (TIDE's definition).
    expected_state = {"cls": "covered", "loc": "covered", "both": "missed", "missed": "missed"}.get(kind, "matched")
    if objects:
        assert table.gt_state[1] == expected_state

    for dap_evaluator in ("coco", "tide"):
        analysis = analyze(gt, results, backend="pycocotools", dap_evaluator=dap_evaluator)
        assert analysis["base_ap"] == pytest.approx(CASES[kind][2], abs=1e-12)   # COCO's AP50 either way
        if dap_evaluator == "tide":
            base_ap, fixed_ap = TIDE_CASES.get(kind, CASES[kind][2:])
        assert analysis["dap_base_ap"] == pytest.approx(base_ap, abs=1e-12)
        # A "both" detection leaves its object missed: the one case with two errors.
        expected_counts = {kind: 1, "missed": 1} if kind == "both" else {kind: 1}
        assert {k: e["count"] for k, e in analysis["errors"].items() if e["count"]} == expected_counts
        for oracle in ORACLES:
            group = analysis["errors"] if oracle in ERROR_KINDS else analysis["special"]
            expected = fixed_ap.get(oracle, base_ap)
            assert group[oracle]["ap_fixed"] == pytest.approx(expected, abs=1e-12), (dap_evaluator, oracle)
            assert group[oracle]["dap"] == pytest.approx(expected - base_ap, abs=1e-12), (dap_evaluator, oracle)


def test_cls_fix_is_dropped_when_the_object_is_already_taken():
    # The cat is found by a cat detection (0.9); a dog detection on it (0.8) is a cls error whose
    # fix would be a duplicate of that cat, so the oracle removes it instead of relabelling it.
    gt, results = scene([(2, A, OBJECT_BOX), (2, B, [60.0, 5.0, 30.0, 30.0])],
                        [(2, A, OBJECT_BOX, 0.9), (2, B, OBJECT_BOX, 0.8), (2, B, [60.0, 5.0, 30.0, 30.0], 0.7)])
    for dap_evaluator in ("coco", "tide"):
        analysis = analyze(gt, results, backend="pycocotools", dap_evaluator=dap_evaluator)
        # Dogs: FP (0.8) then TP (0.7) -> precision 1/2 everywhere: AP50 = (1 + 0.5) / 2.
        assert analysis["base_ap"] == analysis["dap_base_ap"] == pytest.approx(0.75, abs=1e-12)
        assert analysis["errors"]["cls"]["count"] == 1
        # Removing (not relabelling) the dog detection makes dogs perfect: (1 + 1) / 2.
        assert analysis["errors"]["cls"]["ap_fixed"] == pytest.approx(1.0, abs=1e-12)


def test_tide_fixes_one_cls_or_loc_error_per_object_and_counts_crowd_detections():
    # Image 2: a free cat; a cat detection on it with IoU 0.3 (loc, 0.9) and a dog detection
    # on it with IoU 1 (cls, 0.8). TIDE fixes one error per object, the highest-scoring cls
    # *or* loc error: the loc one. Fixing cls therefore removes the dog instead of relabelling
    # it (cats: FP 0.9, TP 0.5 -> 25.5/101; dogs have no object, so their FP counts as AP 0):
    # base (25.5/101 + 0) / 2; cls fixed: dog class gone, cats unchanged -> 25.5/101.
    # Fixing loc turns the 0.9 cat into a true positive: cats 1, dogs 0 -> 0.5.
    gt, results = scene([(1, A, ANCHOR_BOX), (2, A, OBJECT_BOX)],
                        [(1, A, ANCHOR_BOX, 0.5), (2, A, [10.0, 10.0, 40.0, 12.0], 0.9), (2, B, OBJECT_BOX, 0.8)])
    analysis = analyze(gt, results, backend="pycocotools")
    assert analysis["dap_base_ap"] == pytest.approx(12.75 / 101, abs=1e-12)
    assert analysis["errors"]["cls"]["ap_fixed"] == pytest.approx(25.5 / 101, abs=1e-12)
    assert analysis["errors"]["loc"]["ap_fixed"] == pytest.approx(0.5, abs=1e-12)

    # A dog detection inside a crowd of dogs (ignored by COCO and TIDE alike) that covers a cat
    # (IoU 1) is a cls error to TIDE: the cat is not missed, and fixing cls finds it.
    gt, results = scene([(1, A, ANCHOR_BOX), (2, A, OBJECT_BOX), (2, B, [0.0, 0.0, 100.0, 100.0], 1)],
                        [(1, A, ANCHOR_BOX, 0.5), (2, B, OBJECT_BOX, 0.8)])
    table = classify_errors(prepare_inputs(gt, results))
    assert table.det_kind.tolist() == ["tp", "ignored"] and table.ignored_kind[1] == "cls"
    assert table.gt_state.tolist() == ["matched", "covered", "crowd"]
    analysis = analyze(gt, results, backend="pycocotools")
    assert analysis["dap_base_ap"] == pytest.approx(51 / 101, abs=1e-12)     # dogs: no object, no point
    assert analysis["errors"]["cls"]["ap_fixed"] == pytest.approx(1.0, abs=1e-12)
    assert analysis["errors"]["missed"]["dap"] == 0.0


def test_tide_keeps_max_dets_per_image():
    # Two cats in image 1; detections: cat on the first (0.9), a dog on background (0.8, dogs
    # have no object), cat on the second (0.7). With max_dets=2, COCO keeps 2 per image *and
    # class* (all three), TIDE 2 per image, all classes together: the second cat is cut.
    gt, results = scene([(1, A, ANCHOR_BOX), (1, A, OBJECT_BOX)],
                        [(1, A, ANCHOR_BOX, 0.9), (1, B, [0.0, 90.0, 10.0, 10.0], 0.8), (1, A, OBJECT_BOX, 0.7)])
    analysis = analyze(gt, results, backend="pycocotools", max_dets=2)
    assert analysis["counts"]["tp"] == 2 and analysis["counts"]["bkg"] == 1   # COCO's detections
    # TIDE: cats 1 of 2 found first -> 51/101, dogs 0 -> 25.5/101. Fixing the miss -> (1 + 0) / 2.
    assert analysis["dap_base_ap"] == pytest.approx(25.5 / 101, abs=1e-12)
    assert analysis["special"]["false_negatives"]["ap_fixed"] == pytest.approx(0.5, abs=1e-12)


def test_crowd_regions_excuse_detections_and_max_dets_limits_them():
    crowd = [0.0, 0.0, 100.0, 40.0]
    gt, results = scene([(1, A, ANCHOR_BOX), (2, A, crowd, 1)],
                        [(1, A, ANCHOR_BOX, 0.5), (2, A, [5.0, 5.0, 10.0, 10.0], 0.9), (2, A, [30.0, 5.0, 10.0, 10.0], 0.8),
                         (2, B, [5.0, 5.0, 10.0, 10.0], 0.7)])
    table = classify_errors(prepare_inputs(gt, results))
    # Same-class detections inside the crowd are ignored (not errors); a dog there is not
    # excused by a crowd of cats, and with no real object near it, it is background.
    assert table.det_kind.tolist() == ["tp", "ignored", "ignored", "bkg"]
    assert table.gt_state.tolist() == ["matched", "crowd"]
    analysis = analyze(gt, results, backend="pycocotools")
    assert analysis["counts"]["ignored"] == 2 and analysis["counts"]["considered"] == 2
    assert analysis["counts"]["objects"] == 1 and analysis["counts"]["crowd_regions"] == 1
    # COCO keeps the max_dets best detections per image and category: the 0.8 cat is cut.
    table = classify_errors(prepare_inputs(gt, results, max_dets=1))
    assert table.det_kind.tolist() == ["tp", "ignored", "not_considered", "bkg"]


def test_confusion_matrix_cells():
    # Image 2: a cat called dog (IoU 1, score 0.8), a dog found (0.9), a background cat (0.7),
    # a missed dog, and a cat detection below the score threshold (0.3, not counted).
    gt, results = scene(
        [(1, A, ANCHOR_BOX), (2, A, OBJECT_BOX), (2, B, [60.0, 5.0, 30.0, 30.0]), (2, B, [60.0, 60.0, 30.0, 30.0])],
        [(1, A, ANCHOR_BOX, 0.95), (2, B, OBJECT_BOX, 0.8), (2, B, [60.0, 5.0, 30.0, 30.0], 0.9),
         (2, A, [0.0, 55.0, 12.0, 12.0], 0.7), (2, A, [60.0, 60.0, 30.0, 30.0], 0.3)])
    inputs = prepare_inputs(gt, results)
    matrix = confusion_matrix(inputs, classify_errors(inputs), score_thresh=0.5)
    # rows: true cat, dog, background; columns: predicted cat, dog, background.
    assert matrix.tolist() == [[1, 1, 0],
                               [0, 1, 1],
                               [1, 0, 0]]


def test_annotations_without_area_or_iscrowd():
    gt, results = scene([(1, A, ANCHOR_BOX), (2, A, OBJECT_BOX)], [(1, A, ANCHOR_BOX, 0.9)])
    for ann in gt["annotations"]:
        del ann["area"], ann["iscrowd"]
    for backend in ("pycocotools", "faster_coco_eval"):
        assert analyze(gt, results, backend=backend)["base_ap"] == pytest.approx(51 / 101, abs=1e-12)


def test_bad_input_names_the_problem():
    gt, results = scene([(1, A, ANCHOR_BOX)], [(1, 7, ANCHOR_BOX, 0.5)])
    with pytest.raises(ValueError, match="category_id 7"):
        analyze(gt, results)
    gt, results = scene([(1, A, ANCHOR_BOX)], [(1, A, ANCHOR_BOX, 0.5)])
    with pytest.raises(ValueError, match="IoU 0.42"):
        analyze(gt, results, fg_iou=0.42)


@pytest.fixture(scope="module")
def reference_analysis(request):
    from tests.conftest import shared_dataset

    root = shared_dataset("coco_eval_reference")
    gt = json.loads((root / "instances_val2014_100.json").read_text())
    results = json.loads((root / "instances_val2014_fakebbox100_results.json").read_text())
    return gt, results, analyze(gt, results)


def test_reference_ap50_equals_pycocotools_and_counts_add_up(reference_analysis):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, results, analysis = reference_analysis
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(json.loads(json.dumps(results))), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert abs(analysis["base_ap"] - evaluator.stats[1]) < 1e-6
    assert abs(analysis["overall"]["AP"] - 0.5045806987249628) < 1e-6  # SOURCE.txt

    # Our own matching decides exactly what COCOeval decided at IoU 0.5 (area all, 100 dets).
    matched_ids = set()
    for entry in evaluator.evalImgs:
        if entry is None or entry["aRng"] != evaluator.params.areaRng[0]:
            continue
        matched_ids.update(d for d, m in zip(entry["dtIds"], entry["dtMatches"][0]) if m > 0)
    counts = analysis["counts"]
    assert counts["tp"] == len(matched_ids)

    non_crowd = sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0))
    assert counts["objects"] == non_crowd == 830
    assert counts["considered"] == counts["tp"] + sum(counts[k] for k in FP_KINDS)
    assert counts["considered"] + counts["ignored"] + counts["not_considered"] == counts["detections"] == len(results)
    # Every object is found, missed, or the target of a cls/loc error (TIDE does not call those missed).
    assert counts["tp"] + counts["missed"] + counts["covered"] == non_crowd
    assert sum(row["tp"] for row in analysis["per_class"]) == counts["tp"]
    for kind in FP_KINDS + ("missed",):
        assert sum(row[kind] for row in analysis["per_class"]) == counts[kind]
        assert sum(size[kind] for size in analysis["sizes"].values()) == counts[kind]
    assert sum(size["objects"] for size in analysis["sizes"].values()) == non_crowd
    for kind in ERROR_KINDS:
        assert analysis["errors"][kind]["dap"] >= 0.0
    # Fixing every false positive / every unmatched object bounds each single fix.
    assert analysis["special"]["false_positives"]["dap"] >= max(analysis["errors"][k]["dap"] for k in ("dupe", "bkg", "both"))
    assert analysis["special"]["false_negatives"]["dap"] >= analysis["errors"]["missed"]["dap"]
    assert analysis["sizes"]["small"]["AP"] == pytest.approx(evaluator.stats[3], abs=1e-6)


def test_reference_confusion_matrix_accounts_for_everything(reference_analysis):
    gt, results, analysis = reference_analysis
    matrix = np.asarray(analysis["confusion_matrix"]["matrix"])
    category_ids = sorted(c["id"] for c in gt["categories"])
    objects = np.bincount([category_ids.index(a["category_id"]) for a in gt["annotations"] if not a["iscrowd"]],
                          minlength=len(category_ids))
    # Each non-crowd object sits in exactly one cell of its row ...
    np.testing.assert_array_equal(matrix[:-1].sum(axis=1), objects)
    # ... and each detection above the threshold in one cell of its column (none is ignored here).
    assert analysis["counts"]["ignored"] == 0
    kept = [r for r in results if r["score"] >= analysis["confusion_matrix"]["score_thresh"]]
    detections = np.bincount([category_ids.index(r["category_id"]) for r in kept], minlength=len(category_ids))
    np.testing.assert_array_equal(matrix[:, :-1].sum(axis=0), detections)
    assert matrix[-1, -1] == 0
