"""One launch for every training command (detector-train, detector-train-cls, a user's own):
the job's folder under `-m`, the task's config check, the output folder, the run (train, or
eval_only's checkpoint evaluation), and the same answer to the same failure whatever the
task -- a one-line `error: ...` on stderr (and in log.txt when the run got that far), exit
code 1, no traceback.

A library command is its root config and its Task (hydra_command), e.g. detector/cli/train_net.py:

    main, run = hydra_command("config", "detector.tasks.detection.DetectionTask", __name__)

A command of your own may call launch(cfg, task) from its own Hydra entry point. This module
imports neither torch nor a task at start-up, so --help and a mistyped key answer at once.
"""
from __future__ import annotations

import logging
import re
import sys
from typing import TYPE_CHECKING, Any, Callable

from omegaconf import DictConfig

if TYPE_CHECKING:
    from detector.engine.task import Task

EXIT_ERROR = 1   # an expected failure: the message says what to change


def expected_errors() -> tuple[type[BaseException], ...]:
    """The failures a user can fix (a config value, a missing or damaged file, unusable data,
    weights that do not fit the model, a diverged loss): reported in one line, no traceback.
    Anything else is a bug and keeps its traceback."""
    from detector.data import BadSampleError, DatasetError
    from detector.engine.config_checks import ConfigError
    from detector.weights.checkpoint_io import CheckpointError
    from detector.weights.state_dicts import WeightsMismatchError

    # FloatingPointError: the trainer's NonFiniteLossError, and the checkpointer's refusal to save NaN weights.
    return (ConfigError, FloatingPointError, CheckpointError, WeightsMismatchError, FileNotFoundError, DatasetError,
            BadSampleError)


def without_worker_traceback(message: str) -> str:
    """A DataLoader worker's error arrives as "Caught X in DataLoader worker process N.
    Original Traceback ...": keep only its last line, the error itself."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]  # "package.module.SomeError: the message"
    return re.sub(r"^[\w.]+: ", "", last, count=1)


def record_in_log_file(message: str) -> None:
    """Also leave the reason a run stopped in output_dir/log.txt (if the run got that far)."""
    for handler in logging.getLogger("detector").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("detector", logging.ERROR, __file__, 0, message, None, None))


def start(cfg: DictConfig, task: Task, overrides: list[str] | None = None) -> dict[str, Any] | None:
    """The run itself, unguarded: the config checked (nothing exists yet), the output folder
    checked once and the process group joined (open_run_context), the sweep job's
    overrides.yaml, then train or evaluate_checkpoint; returns the metrics. `overrides`: the
    command line's (eval_only refines the checkpoint's config with their model.*/backbone.*
    keys); None: Hydra's, as the commands run."""
    from detector.engine.context import open_run_context
    from detector.engine.run import checkpoint_overrides, evaluate_checkpoint, train
    from detector.engine.sweep import use_job_output_dir, write_overrides_record

    use_job_output_dir(cfg)  # -m: this job's own folder, the same on every rank
    task.check_config(cfg)   # before any folder, data or process exists
    ctx = open_run_context(cfg)
    if ctx.is_main:
        write_overrides_record(ctx.output_dir)  # -m: the job's overrides.yaml
    if bool(cfg.eval_only):
        if overrides is None:
            from hydra.core.hydra_config import HydraConfig

            overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        return evaluate_checkpoint(cfg, task, checkpoint_overrides(overrides), ctx=ctx)
    return train(cfg, task, ctx=ctx)


def launch(cfg: DictConfig, task: Task) -> dict[str, Any] | None:
    """start(cfg, task) as a command runs it: an expected failure (expected_errors) prints
    `error: <message>` and exits with EXIT_ERROR; the process group is released either way
    (kept for the next job under -m)."""
    from detector.engine.sweep import release_process_group

    finished = False
    try:
        metrics = start(cfg, task)
        finished = True
        return metrics
    except expected_errors() as error:
        message = f"error: {without_worker_traceback(str(error))}"
        print(message, file=sys.stderr)
        record_in_log_file(message)
        sys.exit(EXIT_ERROR)
    finally:
        release_process_group(finished)  # under -m the next job reuses the process group


def run_command(main: Callable[[], None], config_name: str) -> None:
    """A console command's entry: Hydra's command line (`main`, decorated by hydra.main with
    `config_name`), plus the valid keys when an override names an unknown one (Hydra names the
    bad key only)."""
    try:
        main()
    except SystemExit as stop:
        if stop.code:
            from detector.config import override_hint

            hint = override_hint(sys.argv[1:], config_name)
            if hint:
                print(hint, file=sys.stderr)
        raise


def hydra_command(config_name: str, task_class: str, module: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(main, run) of a training command: `main`, Hydra's entry point on conf/<config_name>.yaml,
    launches a new `task_class` ("package.module.Class", imported when the command runs); `run`
    is the console entry (run_command). `module` is the command's own module (its __name__):
    Hydra names the job after it (hydra.job.name, which the SLURM launcher uses for its jobs)."""
    import hydra
    from hydra.utils import get_object

    from detector.config import CONFIG_MODULE, register_resolvers

    register_resolvers()

    def main(cfg: DictConfig) -> None:
        launch(cfg, get_object(task_class)())

    main.__module__ = _command_module(module)
    main = hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=config_name, version_base="1.3")(main)

    def run() -> None:
        run_command(main, config_name)

    return main, run


def _command_module(module: str) -> str:
    """The importable name of the command's module, also when it runs as __main__ (python -m,
    torchrun -m: its spec names it; a file run directly: its file name)."""
    if module != "__main__":
        return module
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None:
        return spec.name
    from pathlib import Path

    return Path(sys.argv[0]).stem
