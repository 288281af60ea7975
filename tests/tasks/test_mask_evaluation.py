"""A mask model's evaluation (segm next to bbox, both backends), its pictures and its predictions."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detector.data.masks import segmentation_to_mask
from detector.evaluation.inference import evaluate_detector

H, W = 40, 48
# Image 1: a square (cat) and a triangle (dog); image 2: a rectangle (dog).
OBJECTS = {
    1: [(1, [[4, 4, 20, 4, 20, 20, 4, 20]]), (2, [[24, 30, 44, 30, 34, 6]])],
    2: [(2, [[10, 12, 38, 12, 38, 30, 10, 30]])],
}


def ground_truth() -> dict:
    annotations = []
    for image_id, objects in OBJECTS.items():
        for category_id, polygons in objects:
            xs, ys = polygons[0][0::2], polygons[0][1::2]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            area = float(segmentation_to_mask(polygons, H, W).sum())
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "bbox": box, "area": area, "iscrowd": 0, "segmentation": polygons})
    return {"images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in OBJECTS],
            "annotations": annotations, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}


class PerfectModel(torch.nn.Module):
    """Returns the ground truth of each image (known by its position in the loader) as
    detections; with masks=True also its masks as [N, 1, H, W] probabilities, optionally
    shifted sideways so that the masks, but not the boxes, are wrong."""

    def __init__(self, gt: dict, masks: bool, shift: int = 0):
        super().__init__()
        self.gt, self.masks, self.shift = gt, masks, shift
        self.calls = 0

    def forward(self, images):
        outputs = []
        for _ in images:
            self.calls += 1
            anns = [a for a in self.gt["annotations"] if a["image_id"] == self.calls]
            x, y, w, h = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).unbind(1)
            out = {"boxes": torch.stack([x, y, x + w, y + h], 1), "labels": torch.tensor([a["category_id"] for a in anns]),
                   "scores": torch.linspace(0.9, 0.8, len(anns))}
            if self.masks:
                masks = np.stack([segmentation_to_mask(a["segmentation"], H, W) for a in anns])
                out["masks"] = torch.from_numpy(np.roll(masks, self.shift, axis=2)).float()[:, None] * 0.9
            outputs.append(out)
        return outputs


def loader():
    return [{"images": [torch.rand(3, H, W)], "image_ids": [image_id]} for image_id in OBJECTS]


def evaluate(model, tmp_path, backend="faster_coco_eval", iou_types=("bbox", "segm")):
    metrics, samples = evaluate_detector(model, loader(), ground_truth(), {1: 1, 2: 2}, torch.device("cpu"),
                                         output_dir=tmp_path, iteration=7, backend=backend, num_samples=2,
                                         iou_types=iou_types)
    return metrics, samples, json.loads((tmp_path / "metrics.json").read_text())


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_perfect_masks_give_segm_ap_one_in_metrics_json(tmp_path, backend):
    metrics, samples, document = evaluate(PerfectModel(ground_truth(), masks=True), tmp_path, backend)
    assert set(metrics) == {"bbox", "segm"}
    assert metrics["segm"]["AP"] == pytest.approx(1.0) and metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["per_category"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}
    assert document == {"iteration": 7, **metrics}
    results = json.loads((tmp_path / "inference" / "coco_instances_results.json").read_text())
    assert len(results) == 3 and all(r["segmentation"]["size"] == [H, W] for r in results)
    # Pictures of a mask model carry its binary masks.
    assert len(samples) == 2 and samples[0][4].dtype == bool and samples[0][4].shape == (2, H, W)


def test_segm_measures_the_masks_and_both_backends_agree(tmp_path):
    """Masks shifted by 6 px under exact boxes: bbox AP stays 1, segm AP drops -- and
    faster-coco-eval and pycocotools give the same numbers."""
    by_backend = {}
    for backend in ("faster_coco_eval", "pycocotools"):
        by_backend[backend], _, _ = evaluate(PerfectModel(ground_truth(), masks=True, shift=6), tmp_path / backend,
                                             backend)
    fast, reference = by_backend["faster_coco_eval"], by_backend["pycocotools"]
    assert fast["bbox"]["AP"] == pytest.approx(1.0)
    assert 0.0 <= fast["segm"]["AP"] < 0.9
    for iou_type in ("bbox", "segm"):
        for key, value in reference[iou_type].items():
            assert fast[iou_type][key] == pytest.approx(value, abs=1e-9), (iou_type, key)


def test_box_models_keep_the_box_only_metrics(tmp_path):
    metrics, samples, document = evaluate(PerfectModel(ground_truth(), masks=False), tmp_path, iou_types=("bbox",))
    assert "segm" not in metrics and metrics["AP"] == pytest.approx(1.0)
    assert set(document) == {"iteration", "bbox"} and document["bbox"] == metrics
    assert all(len(sample) == 4 for sample in samples)
    results = json.loads((tmp_path / "inference" / "coco_instances_results.json").read_text())
    assert results and all("segmentation" not in r for r in results)


def test_draw_masks_fills_translucently_under_the_boxes():
    from detector.utils.draw import MASK_ALPHA, draw_boxes, draw_masks, label_colour

    image = np.full((H, W, 3), 100, np.uint8)
    mask = np.zeros((1, H, W), bool)
    mask[0, 10:30, 10:30] = True
    drawn = draw_masks(image, mask, ["cat"])
    expected = np.round(100 * (1 - MASK_ALPHA) + np.array(label_colour("cat")) * MASK_ALPHA)
    assert (drawn[15:25, 15:25] == expected.astype(np.uint8)).all()  # inside: the blend
    assert (drawn[~mask[0]] == 100).all()  # outside: untouched
    assert (drawn[10, 10:30] == label_colour("cat")).all()  # the outline, in the class colour
    # draw_boxes puts the boxes on top of the same fill; a model's [N, 1, H, W] masks work too.
    boxes = np.array([[10, 10, 29, 29]], np.float32)
    with_boxes = draw_boxes(image, boxes, ["cat"], masks=torch.from_numpy(mask[:, None]))
    assert (with_boxes[25:28, 12:28] == drawn[25:28, 12:28]).all()  # below the caption (inside the box's top)
    assert (draw_boxes(image, boxes, ["cat"]) != with_boxes).any()
    with pytest.raises(ValueError, match="Masks of shape"):
        draw_masks(image, np.zeros((2, H, W), bool), ["cat"])


def test_prediction_entries_carry_the_rle_of_a_mask_model():
    from detector.data.masks import rle_to_mask
    from detector.tasks.prediction import describe

    masks = torch.zeros(2, 1, H, W)
    masks[0, 0, 5:15, 5:20] = 0.8
    masks[1, 0, 20:30, 20:40] = 0.3  # below 0.5: an empty mask
    out = {"boxes": torch.tensor([[5.0, 5, 20, 15], [20, 20, 40, 30]]), "scores": torch.tensor([0.9, 0.6]),
           "labels": torch.tensor([1, 2]), "masks": masks}
    kept, texts, predictions, results = describe(out, "a.png", 3, 0.5, ["cat", "dog"], {1: 17, 2: 18})
    assert texts == ["cat", "dog"] and kept["masks"].shape == (2, 1, H, W)
    assert [p["segmentation"] for p in predictions] == [r["segmentation"] for r in results]
    assert rle_to_mask(predictions[0]["segmentation"]).sum() == 10 * 15
    assert rle_to_mask(predictions[1]["segmentation"]).sum() == 0
    assert all(isinstance(p["segmentation"]["counts"], str) for p in predictions)
    # A box model's entries are unchanged.
    del out["masks"]
    _, _, predictions, results = describe(out, "a.png", 3, 0.5, ["cat", "dog"], {1: 17, 2: 18})
    assert all("segmentation" not in p for p in predictions + results)
