"""Train and evaluate a detector (or only evaluate a checkpoint).

`detector-train`, or `python tools/train_net.py` with the same arguments:

    detector-train                                   # shapes demo on the CPU
    detector-train backbone=resnet50 dataset=coco2017 schedule=1x
    torchrun --nproc_per_node=8 tools/train_net.py dataset=coco2017 schedule=1x
    detector-train train.resume=true                 # continue output_dir/checkpoints/last.pth
    detector-train eval_only=true model.weights=outputs/x/checkpoints/model_final.pth
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_MODULE, register_resolvers

register_resolvers()


@hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from detector.engine.launch import launch
    from detector.tasks.detection import DetectionTask

    launch(cfg, DetectionTask())


def run() -> None:
    """The console command (and tools/train_net.py)."""
    from detector.engine.launch import run_command

    run_command(main, "config")


if __name__ == "__main__":  # python -m detector.cli.train_net (also: torchrun -m detector.cli.train_net)
    run()
