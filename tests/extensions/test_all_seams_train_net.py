"""All five seams at once, through the command line as a user runs it: a CSV dataset format,
a blur added to the augmentation list, a plain-CNN backbone, a pooled-MLP box head and a
hook, all from tests/extensions (code on PYTHONPATH, configs on hydra.searchpath), with no
edit inside detector/. The run trains, evaluates, and its checkpoint predicts on its own."""
import json

import torch

from test_user_data import write_csv_dataset
from test_user_hook import train_net


def test_train_net_with_every_user_component(searchpath, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    train_net([searchpath, f"output_dir={out}", *write_csv_dataset(data), "dataset=csv_boxes", "aug=with_blur",
               "backbone=tiny_cnn", "model=pooled_head_rcnn", "+hooks=iteration_log",
               "aug.min_size=[64]", "aug.max_size=80", "model.input.min_size_test=64", "model.input.max_size_test=80",
               "model.fpn.out_channels=32", "model.roi_heads.fc_dim=32", "model.anchor_generator.sizes=[8,16,32,64,128]",
               "train.max_iter=4", "train.checkpoint_period=4", "train.log_period=2", "train.vis_period_images=0",
               "solver.warmup_iters=1", "dataloader.batch_size=2", "dataloader.num_workers=0"])

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iteration"] == 4 and 0.0 <= metrics["bbox"]["AP"] <= 1.0
    assert set(metrics["bbox"]["per_category"]) == {"cat", "dog"}          # the CSV's classes
    assert [e["iteration"] for e in json.loads((out / "iterations_seen.json").read_text())] == [1, 2, 3, 4]

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

    model = load_model(out / "checkpoints" / "model_final.pth")
    assert isinstance(model.backbone.body, TinyCNN) and isinstance(model.roi_heads.box_head, PooledMLPHead)
    with torch.no_grad():
        assert set(model([torch.rand(3, 64, 80)])[0]) >= {"boxes", "scores", "labels"}
