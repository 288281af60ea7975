"""The one-stage models through the command-line tools on tiny generated shapes: tools/train_net.py
trains and evaluates them, resumes them, evaluates a checkpoint with test-time augmentation
(eval_only), and tools/predict.py writes their detections. FCOS runs under schedule=auto, whose
recipe sets only the keys a model has (it sizes anchors, and FCOS has points).

Each test's first training runs the script in its own process; what follows it (the resume, the
eval_only, the prediction) runs the same commands in this process (reliability_helpers.run_in_process,
detector.cli.predict.main, what tools/predict.py calls), sparing a start of Python and torch each."""
from __future__ import annotations

import json

import torch

from reliability_helpers import run_in_process
from tests.tools.test_train_net import run


def tiny(root, output_dir, *extra: str) -> list[str]:
    """tests/tools/test_train_net.py's few-second run, without its R-CNN keys (these models have
    none under schedule=auto) and without the evaluation pictures."""
    return [f"output_dir={output_dir}", f"dataset.root={root}", "dataset.num_train=16", "dataset.num_test=6",
            "dataset.image_size=128", "model.input.min_size_test=128", "model.input.max_size_test=128",
            "aug.min_size=[128]", "aug.max_size=128", "dataloader.batch_size=2", "dataloader.num_workers=1",
            "train.log_period=2", "train.vis_period_images=0", "solver.warmup_iters=2", "model.fpn.out_channels=64",
            "test.analysis=off", "train.amp=none", *extra]


def predict(weights, image, output) -> list[dict]:
    """tools/predict.py's main, in this process."""
    from detector.cli.predict import main

    assert main(["--weights", str(weights), "--input", str(image), "--output", str(output), "--score-thresh", "0.0",
                 "--device", "cpu"]) == 0
    return json.loads((output / "predictions.json").read_text())


def test_fcos_trains_under_the_recipe_and_predicts(tmp_path):
    root, out = tmp_path / "shapes", tmp_path / "out"
    run(tiny(root, out, "model=fcos_fpn", "schedule=auto", "train.max_iter=2"))
    final = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)
    assert final["config"]["model"]["name"] == "fcos_fpn" and "head.centerness.weight" in final["model"]
    # The recipe left the points at the strides (it sizes anchors, which FCOS has none of).
    assert final["config"]["model"]["points"]["sizes"] == [8, 16, 32, 64, 128]
    assert "anchor_generator" not in final["config"]["model"]
    assert json.loads((out / "metrics.json").read_text())["iteration"] == 2
    image = next((root / "test").rglob("*.jpg"))
    predictions = predict(out / "checkpoints" / "model_final.pth", image, tmp_path / "predicted")
    assert predictions and {"file_name", "bbox", "score", "category_id", "category_name"} <= set(predictions[0])


def test_retinanet_trains_resumes_evaluates_with_tta_and_predicts(tmp_path):
    name, schedule = "retinanet_fpn", "shapes"
    root, out = tmp_path / "shapes", tmp_path / "out"
    args = tiny(root, out, f"model={name}", f"schedule={schedule}", "train.checkpoint_period=2")
    run([*args, "train.max_iter=4"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iteration"] == 4 and set(metrics["bbox"]) >= {"AP", "AP50", "AP75", "APs", "per_category"}
    final = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)
    assert final["config"]["model"]["name"] == name and "head.cls_logits.weight" in final["model"]

    # Resume: continues from last.pth (iteration 4) to 6.
    run_in_process([*args, "train.max_iter=6", "train.resume=true"])
    assert "last.pth at iteration 4." in (out / "log.txt").read_text()   # "Resumed from ... at iteration 4."
    assert json.loads((out / "metrics.json").read_text())["iteration"] == 6

    # eval_only with test-time augmentation (two scales, flipped) on the final checkpoint.
    evaluated = tmp_path / "eval"
    run_in_process([*tiny(root, evaluated, f"model={name}", f"schedule={schedule}"), "eval_only=true", "test.aug=true",
         "test.aug_scales=[1.0,1.25]", f"model.weights={out / 'checkpoints' / 'model_final.pth'}"])
    assert set(json.loads((evaluated / "metrics.json").read_text())["bbox"]) >= {"AP", "AP50"}

    image = next((root / "test").rglob("*.jpg"))
    predictions = predict(out / "checkpoints" / "model_final.pth", image, tmp_path / "predicted")
    assert predictions and {"file_name", "bbox", "score", "category_id", "category_name"} <= set(predictions[0])
