"""tools/check_dataset.py: names every problem of a damaged copy and exits 1; clean data exits 0."""
import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("corrupt_copy", REPO / "tests" / "data" / "corrupt_copy.py")
corrupt_copy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corrupt_copy)


_tool_spec = importlib.util.spec_from_file_location("check_dataset_tool", REPO / "tools" / "check_dataset.py")
check_dataset = importlib.util.module_from_spec(_tool_spec)
_tool_spec.loader.exec_module(check_dataset)


def _run(*args, subprocess_run=False):
    """(returncode, stdout, stderr); in-process unless the interpreter's own output matters."""
    if subprocess_run:
        result = subprocess.run([sys.executable, str(REPO / "tools" / "check_dataset.py"), *args],
                                capture_output=True, text=True, cwd=REPO, timeout=120)
        return result
    import contextlib
    import io
    import types

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = check_dataset.main(list(args))
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_names_every_problem_and_exits_1(coco128, tmp_path):
    damaged = corrupt_copy.make_corrupt_copy(coco128, tmp_path)
    result = _run("--images", str(tmp_path / "images"), "--annotations", str(tmp_path / "annotations.json"),
                  subprocess_run=True)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    for defect, reason in corrupt_copy.DEFECTS.items():
        assert any(damaged[defect] in line and reason in line for line in errors), (defect, errors)
    assert len(errors) == len(corrupt_copy.DEFECTS)
    assert "Traceback" not in result.stdout + result.stderr
    assert "boxes per class" in result.stdout and "small" in result.stdout


def test_size_mismatch_duplicates_and_orphans_are_errors(coco128, tmp_path):
    import json

    corrupt_copy.make_corrupt_copy(coco128, tmp_path, clean_images=3)
    path = tmp_path / "annotations.json"
    data = json.loads(path.read_text())
    data["images"][-1]["width"] += 7
    data["annotations"].append(dict(data["annotations"][-1]))  # same id twice
    data["annotations"].append(dict(data["annotations"][-1], id=10**9, image_id=424242))
    data["images"].append(dict(data["images"][-1], file_name="copy.jpg"))  # same image id twice
    path.write_text(json.dumps(data))
    result = _run("--images", str(tmp_path / "images"), "--annotations", str(path))
    assert result.returncode == 1
    assert "size mismatch" in result.stdout
    assert "duplicate annotation id" in result.stdout
    assert "image id 424242" in result.stdout
    assert f"duplicate image id {data['images'][-1]['id']}" in result.stdout


def test_clean_dataset_exits_0_and_reports_histograms(coco128):
    result = _run("dataset=coco128")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "coco128 train: 128 images, 929 boxes" in result.stdout
    assert "2 image(s) without boxes" in result.stdout
    assert "instance masks: 929 of 929 boxes have a segmentation" in result.stdout
    assert "RESULT: clean" in result.stdout


def test_malformed_and_missing_segmentations_are_named(coco128, tmp_path):
    import json

    data = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    boxes = [ann for ann in data["annotations"] if not ann.get("iscrowd", 0)]
    odd, wrong_size, missing = boxes[0], boxes[1], boxes[2]
    odd["segmentation"] = [[10, 10, 20, 10, 20]]
    wrong_size["segmentation"] = {"size": [7, 9], "counts": [63]}
    missing["segmentation"] = []     # box-only exporters write this: no mask, not an error
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    result = _run("--images", str(coco128 / "train2017"), "--annotations", str(path), "--no-decode")
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2, errors
    assert any(f"Annotation id {odd['id']}" in line and "odd number of coordinates" in line for line in errors)
    assert any(f"Annotation id {wrong_size['id']}" in line and "RLE of size [7, 9]" in line for line in errors)
    assert "instance masks: 928 of 929 boxes have a segmentation" in result.stdout
    assert "skips the images of the 1 without one" in result.stdout


def test_bccd_zero_area_boxes_are_errors(bccd):
    result = _run("dataset=bccd", "--no-decode")
    assert result.returncode == 1
    assert "BloodImage_00338" in result.stdout and "BloodImage_00343" in result.stdout
    assert "zero area" in result.stdout


def test_missing_data_is_a_clear_message_not_a_traceback(tmp_path):
    result = _run("dataset=coco2017", f"dataset.root={tmp_path / 'nowhere'}", subprocess_run=True)
    assert result.returncode == 1
    assert "nowhere" in result.stderr and "cocodataset.org" in result.stderr and "datasets/README.md" in result.stderr
    assert "Traceback" not in result.stderr
