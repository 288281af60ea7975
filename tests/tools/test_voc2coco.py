"""tools/voc2coco.py: output loads in pycocotools and round-trips the XML boxes."""
import importlib.util
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("voc2coco_tool", REPO / "tools" / "voc2coco.py")
voc2coco = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(voc2coco)


def test_bccd_split_round_trips(bccd, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "test.json"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "voc2coco.py"), "--root", str(bccd),
                             "--split", "trainval", "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # The two zero-area boxes are reported with their XML file and box, and left out.
    assert "BloodImage_00338.xml" in result.stderr and "(504, 337, 504, 337)" in result.stderr
    assert "BloodImage_00343.xml" in result.stderr
    coco = COCO(str(out))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["Platelets", "RBC", "WBC"]
    stems = (bccd / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    assert len(coco.getImgIds()) == len(stems) == 292
    by_file = {img["file_name"]: img["id"] for img in coco.loadImgs(coco.getImgIds())}
    total = 0
    for stem in stems:
        expected = []
        for obj in ET.parse(bccd / "Annotations" / f"{stem}.xml").getroot().iter("object"):
            b = obj.find("bndbox")
            x1, y1, x2, y2 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x2 > x1 and y2 > y1:
                expected.append((obj.findtext("name"), x1, y1, x2, y2))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[by_file[f"{stem}.jpg"]]))
        # COCO [x, y, w, h] back to VOC's 1-based inclusive corners.
        got = [(coco.loadCats(a["category_id"])[0]["name"], a["bbox"][0] + 1, a["bbox"][1] + 1,
                a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]) for a in anns]
        assert sorted(got) == sorted(expected), stem
        total += len(anns)
    assert total == 3941  # 3943 boxes in trainval minus the two zero-area ones


def test_classes_option_and_errors(bccd, tmp_path):
    out = tmp_path / "x.json"
    assert voc2coco.main(["--root", str(bccd), "--split", "test", "--output", str(out),
                          "--classes", "WBC,RBC,Platelets"]) == 0
    data = json.loads(out.read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "WBC"), (2, "RBC"), (3, "Platelets")]
    result = subprocess.run([sys.executable, str(REPO / "tools" / "voc2coco.py"), "--root", str(bccd),
                             "--split", "nosuchsplit", "--output", str(out)], capture_output=True, text=True)
    assert result.returncode == 1 and "nosuchsplit.txt" in result.stderr and "Traceback" not in result.stderr


def test_the_dataset_gt_equals_the_tool_output(bccd, tmp_path):
    from detector.config import load_config
    from detector.data import build_dataset

    out = tmp_path / "test.json"
    assert voc2coco.main(["--root", str(bccd), "--split", "test", "--output", str(out)]) == 0
    tool = json.loads(out.read_text())
    gt = build_dataset(load_config(["dataset=bccd"]), "test").coco_gt().dataset
    assert tool["images"] == gt["images"]
    strip = lambda anns: [{k: v for k, v in a.items() if k != "source"} for a in anns]  # noqa: E731
    assert tool["annotations"] == strip(gt["annotations"])
