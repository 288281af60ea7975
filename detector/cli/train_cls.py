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

import os
import sys

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_MODULE, register_resolvers

register_resolvers()


@hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="cls", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from detector.engine.sweep import release_process_group, use_job_output_dir, write_overrides_record
    from detector.engine.config_checks import ConfigError, check_output_dir
    from detector.engine.run import checkpoint_overrides, evaluate_checkpoint, train
    from detector.tasks.classification import ClassificationTask, validate_cls_config
    from detector.engine.trainer import NonFiniteLossError
    from detector.utils.distributed import adopt_slurm_environment
    from detector.weights.checkpoint_io import CheckpointError
    from detector.weights.state_dicts import WeightsMismatchError

    finished = False
    try:
        use_job_output_dir(cfg)  # -m: this job's own folder, the same on every rank
        validate_cls_config(cfg)
        adopt_slurm_environment()  # a SLURM task's rank, as torchrun would name it
        if int(os.environ.get("RANK", 0)) == 0:
            check_output_dir(cfg.output_dir)
            write_overrides_record(cfg.output_dir)  # -m: the job's overrides.yaml
        if cfg.eval_only:
            from hydra.core.hydra_config import HydraConfig

            evaluate_checkpoint(cfg, ClassificationTask(), checkpoint_overrides(HydraConfig.get().overrides.task))
        else:
            train(cfg, ClassificationTask())
        finished = True
    except (ConfigError, NonFiniteLossError, WeightsMismatchError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        release_process_group(finished)  # under -m the next job reuses the process group


def run() -> None:
    """The console command (and tools/train_cls.py)."""
    main()


if __name__ == "__main__":  # python -m detector.cli.train_cls (also: torchrun -m detector.cli.train_cls)
    run()
