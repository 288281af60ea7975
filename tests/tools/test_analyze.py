"""tools/analyze.py on the cocoapi reference results: exit code, files, numbers, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[2]
PNGS = ("error_breakdown.png", "confusion_matrix.png", "pr_curves.png", "size_breakdown.png")
# pycocotools' AP50 on these files (SOURCE.txt of coco_eval_reference).
REFERENCE_AP50 = 0.6969727247299577


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "analyze.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_analyze_writes_summary_json_and_pictures(coco_eval_reference, tmp_path):
    out = tmp_path / "analysis"
    result = run_tool("--gt", str(coco_eval_reference / "instances_val2014_100.json"),
                      "--results", str(coco_eval_reference / "instances_val2014_fakebbox100_results.json"),
                      "--output", str(out), "--score-thresh", "0.3")
    assert result.returncode == 0, result.stderr
    assert "| error | count | AP50 after fix | dAP50 |" in result.stdout

    analysis = json.loads((out / "analysis.json").read_text())
    assert abs(analysis["base_ap"] - REFERENCE_AP50) < 1e-6
    assert analysis["confusion_matrix"]["score_thresh"] == 0.3
    assert set(analysis["files"].values()) == set(PNGS)
    for name in PNGS:
        image = cv2.imread(str(out / name))
        assert image is not None and min(image.shape[:2]) > 100, name

    summary = (out / "summary.md").read_text()
    for name in PNGS:
        assert f"]({name})" in summary
    # The error table in the markdown carries the same numbers as the JSON.
    cls = analysis["errors"]["cls"]
    assert f"| cls (classification) | {cls['count']} | {100 * cls['ap_fixed']:.1f} | {100 * cls['dap']:.2f} |" in summary
    assert "| person |" in summary and "| small |" in summary


def test_analyze_reports_bad_input(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 1}], "annotations": [],
                              "categories": [{"id": 1, "name": "cat"}]}))
    result = run_tool("--gt", str(gt), "--results", str(tmp_path / "missing.json"), "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and "missing.json" in result.stderr and "does not exist" in result.stderr
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    result = run_tool("--gt", str(gt), "--results", str(results), "--output", str(tmp_path / "o"))
    assert result.returncode == 2 and "image_id 5" in result.stderr


def test_analyze_iou_type_segm_on_a_mask_results_file(coco_eval_reference, tmp_path, capsys):
    from detector.cli.analyze import main  # in-process: the tool's code without a second start-up

    out = tmp_path / "segm"
    args = ["--gt", str(coco_eval_reference / "instances_val2014_100.json"),
            "--results", str(coco_eval_reference / "instances_val2014_fakesegm100_results.json"),
            "--output", str(out)]
    # Without --iou-type segm the masks-only file is refused with a pointer to the option.
    assert main(args) == 2
    assert "segm" in capsys.readouterr().err
    assert main(args + ["--iou-type", "segm"]) == 0
    stdout = capsys.readouterr().out
    assert "IoU by mask (segm)" in stdout and "| 32.0 | 56.2 | 29.9 |" in stdout  # cocoapi's segm AP, AP50, AP75
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["settings"]["iou_type"] == "segm"
    assert abs(analysis["base_ap"] - 0.5622883972521636) < 1e-9  # segm AP50 (SOURCE.txt)
    assert set(analysis["files"].values()) == set(PNGS)
    assert "IoU by mask (segm)" in (out / "summary.md").read_text()
    assert sum(analysis["counts"][k] for k in ("tp", "cls", "loc", "both", "dupe", "bkg")) == 734
