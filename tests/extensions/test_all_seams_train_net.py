"""All five seams at once, through the command line as a user runs it: a CSV dataset format,
a blur added to the augmentation list, a plain-CNN backbone, a pooled-MLP box head and a
hook, all from tests/extensions (code on PYTHONPATH, configs on hydra.searchpath), with no
edit inside detector/. The run trains, evaluates, and its checkpoint predicts on its own.

What each seam must change, and what the test reads to see it:
- the hook: its notes of every iteration, and its records in metrics.jsonl at the writers' turn;
- the format: the evaluation runs on the CSV's two test images, plain (the blur, a training
  augmentation, stays out of it), named by the CSV's classes;
- the backbone and box head: the evaluated detections are the checkpoint's model's outputs on
  those images, and those outputs move when the user's modules' weights move."""
import json

import cv2
import pytest
import torch

from test_user_data import TEST, write_csv_dataset
from test_user_hook import train_net


def read_image(path) -> torch.Tensor:
    """The image as the model takes it: RGB, float CHW in [0, 1], read here, not by the run."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0


def test_train_net_with_every_user_component(searchpath, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    dataset = write_csv_dataset(data)
    train_net([searchpath, f"output_dir={out}", *dataset, "dataset=csv_boxes", "aug=with_blur",
               "backbone=tiny_cnn", "model=pooled_head_rcnn", "+hooks=iteration_log",
               "aug.min_size=[64]", "aug.max_size=80", "model.input.min_size_test=64", "model.input.max_size_test=80",
               "model.fpn.out_channels=32", "model.roi_heads.fc_dim=32", "model.anchor_generator.sizes=[8,16,32,64,128]",
               "train.max_iter=4", "train.checkpoint_period=4", "train.log_period=2", "train.vis_period_images=0",
               "solver.warmup_iters=1", "dataloader.batch_size=2", "dataloader.num_workers=0"])

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iteration"] == 4
    assert set(metrics["bbox"]["per_category"]) == {"cat", "dog"}          # the CSV's classes
    # The hook: every iteration seen, and what it stored written at the iterations it belongs to.
    assert [e["iteration"] for e in json.loads((out / "iterations_seen.json").read_text())] == [1, 2, 3, 4]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["user"]["iterations_seen"]) for r in records if r["type"] == "user"] == [(2, 2), (4, 4)]

    checkpoint = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)
    config = checkpoint["config"]
    assert config["backbone"]["_target_"] == "user_plugins.tiny_backbone.TinyCNN"
    assert config["model"]["roi_heads"]["box_head"]["_target_"] == "user_plugins.box_head.PooledMLPHead"
    assert config["dataset"]["_target_"] == "user_plugins.csv_format.CsvBoxes"
    assert [step["_target_"] for step in config["aug"]["train"]][-1] == "albumentations.Blur"
    assert config["model"]["class_names"] == ["cat", "dog"] and config["model"]["num_classes"] == 2

    # The checkpoint alone rebuilds the user's model (its stored config names the classes).
    from detector import load_model
    from user_plugins.box_head import PooledMLPHead
    from user_plugins.tiny_backbone import TinyCNN

    model = load_model(out / "checkpoints" / "model_final.pth", overrides=["model.roi_heads.score_thresh=0.0"])
    assert isinstance(model.backbone.body, TinyCNN) and isinstance(model.roi_heads.box_head, PooledMLPHead)

    # The evaluation ran on the CSV's test images, as they are on disk: its detections are the
    # checkpoint's outputs on them (the run keeps those scoring over the default 0.05).
    from detector.config import load_config
    from detector.data import build_dataset

    test = build_dataset(load_config([searchpath, "dataset=csv_boxes", *dataset]), "test")
    names = {r.image_id: r.path.rsplit("/", 1)[1] for r in test.records}
    assert sorted(names.values()) == sorted(TEST)
    results = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    assert {r["image_id"] for r in results} == set(names)
    images = {image_id: read_image(data / "images" / name) for image_id, name in names.items()}
    with torch.no_grad():   # one batch, as the evaluation batches them (same size: the same padding)
        outputs = dict(zip(images, model(list(images.values()))))
    for image_id, output in outputs.items():
        kept = output["scores"] > 0.05
        ran = sorted((r for r in results if r["image_id"] == image_id), key=lambda r: -r["score"])
        assert len(ran) == int(kept.sum()) > 0, names[image_id]
        boxes = output["boxes"][kept]
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        assert [r["score"] for r in ran] == pytest.approx(output["scores"][kept].tolist(), abs=1e-4)
        assert torch.allclose(torch.tensor([r["bbox"] for r in ran]), xywh, atol=1e-2)
        category = {label: test.label_to_category_id[label] for label in (1, 2)}
        assert [r["category_id"] for r in ran] == [category[int(l)] for l in output["labels"][kept]]

    # The user's modules make those outputs: moving their weights moves the scores.
    first = next(iter(images))
    for module in (model.backbone.body, model.roi_heads.box_head):
        saved = {k: v.clone() for k, v in module.state_dict().items()}
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.mul_(1.5)
            moved = model([images[first]])[0]
        module.load_state_dict(saved)
        assert not torch.allclose(moved["scores"][:5], outputs[first]["scores"][:5]), type(module).__name__
