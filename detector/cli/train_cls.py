"""Train and evaluate a ResNet classifier on an ImageFolder (or only evaluate a checkpoint).

`detector-train-cls`, or `python tools/train_cls.py` with the same arguments:

    python tools/crop_instances.py dataset=bccd --output /tmp/bccd_crops
    detector-train-cls data.root=/tmp/bccd_crops output_dir=outputs/bccd_cls
    detector-train-cls data.root=DIR backbone=resnet50 model.weights=resnet50-imagenet.pth   # fine-tune
    torchrun --nproc_per_node=2 tools/train_cls.py data.root=DIR                                    # DDP
    detector-train-cls data.root=DIR train.resume=true          # continue output_dir/checkpoints/last.pth
    detector-train-cls data.root=DIR eval_only=true model.weights=OUT/checkpoints/model_final.pth

Writes output_dir/{config.yaml, log.txt, checkpoints/, metrics.json, confusion_matrix.png, tb/}.
"""
from __future__ import annotations

from detector.engine.launch import hydra_command

# main: Hydra's entry point (what tests and launchers call); run: the console command.
main, run = hydra_command("cls", "detector.tasks.classification.ClassificationTask", __name__)

if __name__ == "__main__":  # python -m detector.cli.train_cls (also: torchrun -m detector.cli.train_cls)
    run()
