"""Train and evaluate a detector (or only evaluate a checkpoint).

`detector-train`, or `python tools/train_net.py` with the same arguments:

    detector-train                                   # shapes demo on the CPU
    detector-train backbone=resnet50 dataset=coco2017 schedule=1x
    torchrun --nproc_per_node=8 tools/train_net.py dataset=coco2017 schedule=1x
    detector-train train.resume=true                 # continue output_dir/checkpoints/last.pth
    detector-train eval_only=true model.weights=outputs/x/checkpoints/model_final.pth
"""
from __future__ import annotations

from detector.engine.launch import hydra_command

# main: Hydra's entry point (what tests and launchers call); run: the console command.
main, run = hydra_command("config", "detector.tasks.detection.DetectionTask", __name__)

if __name__ == "__main__":  # python -m detector.cli.train_net (also: torchrun -m detector.cli.train_net)
    run()
