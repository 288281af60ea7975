"""A small COCO-format copy of coco128 with one of each defect (shared by the data and tool tests)."""
import json
import shutil
from pathlib import Path

# file stem of the damaged image -> what is wrong with it (as check_dataset should say it)
DEFECTS = {
    "truncated": "unreadable or corrupt",
    "missing": "file not found",
    "nan_box": "NaN",
    "negative_width": "negative width",
    "unknown_category": "unknown category id 999",
}


def make_corrupt_copy(coco128: Path, folder: Path, clean_images: int = 5) -> dict:
    """Copy len(DEFECTS) + clean_images annotated coco128 images to folder/images and
    folder/annotations.json, then damage one image per defect. Returns {defect: file name}."""
    data = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    annotated = sorted({a["image_id"] for a in data["annotations"] if not a["iscrowd"]})
    keep = set(annotated[: len(DEFECTS) + clean_images])
    images = [i for i in data["images"] if i["id"] in keep]
    annotations = [a for a in data["annotations"] if a["image_id"] in keep and not a["iscrowd"]]
    (folder / "images").mkdir(parents=True)
    for image in images:
        shutil.copy(coco128 / "train2017" / image["file_name"], folder / "images" / image["file_name"])
    damaged = {}
    for defect, image in zip(DEFECTS, images):
        damaged[defect] = image["file_name"]
        first = next(a for a in annotations if a["image_id"] == image["id"])
        path = folder / "images" / image["file_name"]
        if defect == "truncated":
            data_bytes = path.read_bytes()
            path.write_bytes(data_bytes[: len(data_bytes) // 3])
        elif defect == "missing":
            path.unlink()
        elif defect == "nan_box":
            first["bbox"][2] = float("nan")
        elif defect == "negative_width":
            first["bbox"][2] = -15.0
        elif defect == "unknown_category":
            first["category_id"] = 999
    data.update(images=images, annotations=annotations)
    (folder / "annotations.json").write_text(json.dumps(data))  # NaN is written as NaN, as Python tools do
    return damaged
