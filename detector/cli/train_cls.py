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

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_MODULE, register_resolvers

register_resolvers()


@hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="cls", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from detector.engine.launch import launch
    from detector.tasks.classification import ClassificationTask

    launch(cfg, ClassificationTask())


def run() -> None:
    """The console command (and tools/train_cls.py)."""
    from detector.engine.launch import run_command

    run_command(main, "cls")


if __name__ == "__main__":  # python -m detector.cli.train_cls (also: torchrun -m detector.cli.train_cls)
    run()
