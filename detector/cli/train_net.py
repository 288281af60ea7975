"""Train and evaluate a detector (or only evaluate a checkpoint).

`detector-train`, or `python tools/train_net.py` with the same arguments:

    detector-train                                   # shapes demo on the CPU
    detector-train backbone=resnet50 dataset=coco2017 schedule=1x
    torchrun --nproc_per_node=8 tools/train_net.py dataset=coco2017 schedule=1x
    detector-train train.resume=true                 # continue output_dir/checkpoints/last.pth
    detector-train eval_only=true model.weights=outputs/x/checkpoints/model_final.pth
"""
from __future__ import annotations

import os
import re
import sys

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_MODULE, register_resolvers

register_resolvers()


def record_in_log_file(message: str) -> None:
    """Also leave the reason a run stopped in output_dir/log.txt (if the run got that far)."""
    import logging

    for handler in logging.getLogger("detector").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("detector", logging.ERROR, __file__, 0, message, None, None))


def without_worker_traceback(message: str) -> str:
    """A DataLoader worker's error arrives as "Caught X in DataLoader worker process N.
    Original Traceback ...": keep only its last line, the error itself."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]  # "package.module.SomeError: the message"
    return re.sub(r"^[\w.]+: ", "", last, count=1)


@hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from detector.engine.sweep import release_process_group, use_job_output_dir, write_overrides_record
    from detector.engine.config_checks import ConfigError, check_output_dir, validate_config
    from detector.engine.run import checkpoint_overrides, evaluate_checkpoint, train
    from detector.tasks.detection import DetectionTask
    from detector.weights.checkpoint_io import CheckpointError
    from detector.data import BadSampleError, DatasetError
    from detector.utils.distributed import adopt_slurm_environment

    finished = False
    try:
        use_job_output_dir(cfg)  # -m: this job's own folder, the same on every rank
        validate_config(cfg)
        adopt_slurm_environment()  # a SLURM task's rank, as torchrun would name it
        if int(os.environ.get("RANK", 0)) == 0:
            check_output_dir(cfg.output_dir)  # fail now, not after an hour of training
            write_overrides_record(cfg.output_dir)  # -m: the job's overrides.yaml
        if cfg.eval_only:
            from hydra.core.hydra_config import HydraConfig

            model_overrides = checkpoint_overrides(HydraConfig.get().overrides.task)
            evaluate_checkpoint(cfg, DetectionTask(), model_overrides)
        else:
            train(cfg, DetectionTask())
        finished = True
    except (ConfigError, FloatingPointError, CheckpointError, FileNotFoundError, DatasetError, BadSampleError) as error:
        # Expected failures (bad config, missing files, unusable data, a diverged loss): a
        # clear message, no traceback, non-zero exit.
        message = without_worker_traceback(str(error))
        print(f"error: {message}", file=sys.stderr)
        record_in_log_file(f"error: {message}")
        sys.exit(1)
    finally:
        release_process_group(finished)  # under -m the next job reuses the process group


def run() -> None:
    """The console command (and tools/train_net.py): Hydra's command line, plus the valid keys
    when an override names an unknown one."""
    try:
        main()
    except SystemExit as stop:
        if stop.code:  # Hydra names an unknown key but not the valid ones: add them
            from detector.config import override_hint

            hint = override_hint(sys.argv[1:])
            if hint:
                print(hint, file=sys.stderr)
        raise


if __name__ == "__main__":  # python -m detector.cli.train_net (also: torchrun -m detector.cli.train_net)
    run()
