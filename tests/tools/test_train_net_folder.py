"""tools/train_net.py on a folder as a user brings it (`dataset=auto dataset.path=DIR`): a YOLO
export with one split only. The log names the layout, the classes and the images of each split;
the carved test split is recorded in config.yaml and every checkpoint; a resume of the run and an
eval_only of its checkpoint in a new folder evaluate those same images even after the folder
gained images; the output folder is named after the dataset folder."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from detector.config import load_config
from reliability_helpers import TINY_MODEL, TRAIN_NET, REPO, run_in_process, train_net

_spec = importlib.util.spec_from_file_location("folder_datasets", REPO / "tests" / "data" / "folder_datasets.py")
fd = importlib.util.module_from_spec(_spec)
sys.modules["folder_datasets"] = fd   # its dataclasses look their module up
_spec.loader.exec_module(fd)

# schedule=shapes: a fixed recipe, so the run does not depend on what schedule=auto would pick
# for twelve images; the tiny-model overrides then make it seconds long.
RUN = ["dataset=auto", "schedule=shapes", "train.amp=none", "test.analysis=off", "model.roi_heads.score_thresh=0.0",
       *TINY_MODEL]


def recorded_test_images(run_dir: Path) -> list[str]:
    return list(OmegaConf.load(run_dir / "config.yaml").dataset.test_images)


def detections(run_dir: Path) -> list:
    return json.loads((run_dir / "inference" / "coco_instances_results.json").read_text())


def test_a_one_split_yolo_folder_trains_and_its_carved_test_images_stay_for_resume_and_eval_only(tmp_path):
    images = fd.sample_images(12)
    root = tmp_path / "my_pets"
    fd.write_yolo_split(root / "images", root / "labels", images)
    (root / "data.yaml").write_text("train: images\nnames: [cat, dog, bird]\n")
    carve = list(load_config(["dataset=auto", f"dataset.path={root}"]).dataset.test_images)
    boxes = {f"images/{img.name}": len(img.boxes) for img in images}
    test_boxes = sum(boxes[name] for name in carve)
    assert len(carve) == 2 and set(carve) <= set(boxes)

    run = tmp_path / "run"
    proc = train_net([*RUN, f"dataset.path={root}", f"output_dir={run}", "train.max_iter=3"])
    log = (run / "log.txt").read_text()
    # Once on the console too: not also while the config was composed, before the run's logger.
    assert (proc.stdout + proc.stderr).count("YOLO labels described by") == 1
    where = f"dataset.path={root}: "
    assert f"{where}YOLO labels described by {root / 'data.yaml'}; 3 classes: cat, dog, bird\n" in log
    assert f"{where}only one split ('train'): a test split is carved from it\n" in log
    rule = "carved from its 'train' split (dataset.test_fraction=0.2, dataset.split_seed=0)"
    assert f"{where}train: 10 images, {sum(boxes.values()) - test_boxes} boxes, {rule}\n" in log
    assert f"{where}test: 2 images, {test_boxes} boxes, {rule}\n" in log
    assert "Evaluation of 2 images" in log
    # config.yaml and the checkpoint record the carve itself.
    assert recorded_test_images(run) == carve
    checkpoint = torch.load(run / "checkpoints" / "model_final.pth", weights_only=True)
    assert checkpoint["config"]["dataset"]["test_images"] == carve
    first = detections(run)
    assert first

    # The folder gains images (named to sort after the others, so the old images keep their
    # image ids): a fresh carve now picks other test images.
    more = [fd.Img(f"new_{i}.jpg", (64, 48), [(fd.CLASSES[i % 3], 3, 4, 30, 40)]) for i in range(6)]
    fd.write_yolo_split(root / "images", root / "labels", more)
    assert list(load_config(["dataset=auto", f"dataset.path={root}"]).dataset.test_images) != carve

    # A resume of the finished run evaluates its final weights again: on the recorded images.
    # (This run and the eval_only below run tools/train_net.py's run in this process: two starts of Python less.)
    run_in_process([*RUN, f"dataset.path={root}", f"output_dir={run}", "train.max_iter=3", "train.resume=true"])
    resumed_log = (run / "log.txt").read_text()[len(log):]
    assert "changed since" in resumed_log and "The recorded test images are kept" in resumed_log
    assert f"{where}test: 2 images, {test_boxes} boxes" in resumed_log
    assert f"{where}train: 16 images" in resumed_log   # the new images train
    assert recorded_test_images(run) == carve
    assert detections(run) == first

    # eval_only of its checkpoint in a new folder: the run folder of model.weights gives the record.
    evaluation = tmp_path / "evaluation"
    run_in_process([*RUN, f"dataset.path={root}", f"output_dir={evaluation}", "eval_only=true",
               f"model.weights={run / 'checkpoints' / 'model_final.pth'}"])
    assert recorded_test_images(evaluation) == carve
    assert "Evaluation of 2 images" in (evaluation / "log.txt").read_text()
    assert detections(evaluation) == first
    assert json.loads((evaluation / "metrics.json").read_text())["bbox"] == \
        json.loads((run / "metrics.json").read_text())["bbox"]


def test_the_run_folder_is_named_after_the_dataset_folder(tmp_path):
    # Hydra's own view of the resolved key (no dataset is read to print it).
    proc = subprocess.run([sys.executable, TRAIN_NET, "dataset=auto", f"dataset.path={tmp_path / 'Pets 2024'}/",
                           "backbone=resnet34", "--cfg", "job", "-p", "output_dir"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "outputs/Pets 2024_resnet34"
