"""tools/evaluate.py --iou-type segm: the official cocoapi segm numbers, with both backends."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
# pycocotools 2.0.11 on cocoapi's fake segm results (coco_eval_reference/SOURCE.txt).
REFERENCE_SEGM = [
    0.3195452758576433, 0.5622883972521636, 0.29892653412086784, 0.3873740315997837,
    0.31018272403369485, 0.3269339071005138, 0.2682297225711534, 0.41544868114906375,
    0.4168394992198818, 0.4694498622754236, 0.37675922666197265, 0.3814715099715099,
]


def _evaluate(*args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "evaluate.py"), *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_evaluate_tool_reproduces_official_cocoapi_segm_numbers(coco_eval_reference, tmp_path, backend):
    out = tmp_path / "metrics.json"
    proc = _evaluate("--gt", coco_eval_reference / "instances_val2014_100.json",
                     "--results", coco_eval_reference / "instances_val2014_fakesegm100_results.json",
                     "--iou-type", "segm", "--evaluator", backend, "--out", out)
    assert proc.returncode == 0, proc.stderr
    # The published summarize() output (val2014_fake_eval_res.txt) says segm AP 0.320.
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.320" in proc.stdout
    assert "IoU type segm" in proc.stdout and "person" in proc.stdout
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"iteration", "segm"}
    assert [metrics["segm"][n] for n in NAMES] == pytest.approx(REFERENCE_SEGM, abs=1e-9)
    assert set(metrics["segm"]) == set(NAMES) | {"per_category"}
    assert len(metrics["segm"]["per_category"]) == 80


def test_evaluate_tool_bbox_and_segm_together_and_clear_errors(coco_eval_reference, tmp_path, capsys):
    from detector.cli.evaluate import main  # in-process: the same code as the tool, without a start-up

    gt = coco_eval_reference / "instances_val2014_100.json"
    segm_only = coco_eval_reference / "instances_val2014_fakesegm100_results.json"
    # Today's default (bbox) on a masks-only file: a clear error that points at --iou-type segm.
    assert main(["--gt", str(gt), "--results", str(segm_only)]) == 2
    stderr = capsys.readouterr().err
    assert "lacks the key(s) ['bbox']" in stderr and "segm" in stderr
    # A mask model's file has both; one run writes both blocks.
    from detector.data.masks import rle_to_box

    results = json.loads(segm_only.read_text())
    for det in results:
        det["bbox"] = rle_to_box(det["segmentation"])
    both = tmp_path / "both.json"
    both.write_text(json.dumps(results))
    out = tmp_path / "metrics.json"
    assert main(["--gt", str(gt), "--results", str(both), "--iou-type", "bbox", "segm", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "IoU type bbox" in stdout and "IoU type segm" in stdout
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"iteration", "bbox", "segm"}
    assert set(metrics["bbox"]) == set(metrics["segm"])
    assert metrics["segm"]["AP"] == pytest.approx(REFERENCE_SEGM[0], abs=1e-9)
    assert metrics["bbox"]["AP"] > 0.3  # tight boxes of the masks find the objects' boxes too
