"""The standard hooks: LR schedule, checkpoints, evaluation, writers."""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from detector.weights.checkpointer import FINAL, LAST, Checkpointer
from detector.utils.rng_state import capture_rng_state, restore_rng_state
from detector.engine.trainer import HookBase
from detector.utils.distributed import barrier


class LRSchedulerHook(HookBase):
    """Records the lr used by this iteration, then advances the schedule."""

    def __init__(self, optimizer, scheduler):
        self.optimizer = optimizer
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("lr", self.optimizer.param_groups[0]["lr"], smooth=False)
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """`last.pth` every `period` iterations; `model_final.pth` (and `last.pth`) at the end,
    which is max_iter or the iteration a hook stopped the run at (early stopping).

    Only rank 0 writes (the Checkpointer knows); all ranks call it so that the
    finiteness check raises everywhere alike. `extra_state()` adds what other hooks must
    find again on resume (the smoothing windows, the best metric). Registered after the
    evaluation and the writers, so a checkpoint at N holds the state after N's evaluation
    and everything of iteration N is already in metrics.jsonl.
    """

    def __init__(self, checkpointer: Checkpointer, period: int, extra_state: Callable[[], dict] | None = None):
        self.checkpointer = checkpointer
        self.period = int(period)
        self.extra_state = extra_state

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done >= self.trainer.max_iter or self.trainer.stop_requested:
            extra = self._extra()
            self.checkpointer.save(LAST, done, extra=extra)
            self.checkpointer.save(FINAL, done, final=True, extra=extra)
        elif self.period > 0 and done % self.period == 0:
            self.checkpointer.save(LAST, done, extra=self._extra())
        else:
            return
        barrier()  # the file exists before any rank moves on (a crash now loses nothing)

    def _extra(self) -> dict:
        extra = {"events": self.trainer.storage.state_dict()}
        if self.extra_state is not None:
            extra.update(self.extra_state())
        return extra


EvalFunction = Callable[[int], tuple[dict[str, float], Sequence[tuple[str, Any]]]]


class EvalHook(HookBase):
    """Evaluates every `period` iterations (0: only at the end) and at the last one.

    `eval_function(iteration)` returns (scalars, images): flat metric names -> values and
    (tag, uint8 HWC picture) pairs, both stored for the writers. The RNG states are
    restored afterwards, so evaluating (which may draw random numbers, e.g. to seed
    loader workers) does not change the training that follows -- a resumed run must match
    an uninterrupted one, whatever the evaluation schedule.
    """

    def __init__(self, period: int, eval_function: EvalFunction):
        self.period = int(period)
        self.eval_function = eval_function
        self.last_metrics: dict[str, float] | None = None
        self.last_iteration: int | None = None
        # Periodic evaluations only up to this iteration (0: no limit). A time budget's plan sets
        # it when a periodic evaluation would fall just before the final one.
        self.last_periodic = 0

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        periodic = self.period > 0 and done % self.period == 0 and (not self.last_periodic
                                                                   or done <= self.last_periodic)
        if done >= self.trainer.max_iter or periodic:
            self.evaluate(done)

    def evaluate(self, iteration: int) -> None:
        rng = capture_rng_state()
        try:
            scalars, images = self.eval_function(iteration)
        finally:
            restore_rng_state(rng)
        storage = self.trainer.storage
        for name, value in scalars.items():
            if value is not None:
                storage.put_scalar(name, value, smooth=False)
        for tag, picture in images:
            storage.put_image(tag, picture)
        storage.put_record("eval", scalars)  # None values kept: metrics.jsonl holds all 12 numbers
        self.last_metrics = dict(scalars)
        self.last_iteration = iteration
        self.trainer.model.train()


class PeriodicWriter(HookBase):
    """Calls each writer every `period` iterations, at the last iteration (max_iter or an
    early stop), and right after an evaluation or validation (so its metrics reach
    TensorBoard and metrics.jsonl at the iteration they belong to)."""

    def __init__(self, writers: Sequence, period: int):
        self.writers = list(writers)
        self.period = max(1, int(period))

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        storage = self.trainer.storage
        if (done % self.period == 0 or done >= self.trainer.max_iter or self.trainer.stop_requested
                or storage.has_images() or storage.has_records()):
            self.write()

    def write(self) -> None:
        for writer in self.writers:
            writer.write(self.trainer)
        self.trainer.storage.clear_records()  # every writer has seen them (on every rank)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class SkippedSamplesReport(HookBase):
    """Counts the bad training samples the loader replaced, and reports them at the end."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.reported = 0

    def after_step(self) -> None:
        skipped = self.trainer.skipped_samples
        if len(skipped) > self.reported:
            for message in skipped[self.reported :]:
                self.logger.warning("Skipped a bad training sample: %s", message)
            self.reported = len(skipped)

    def after_train(self) -> None:
        from detector.utils.distributed import all_reduce_mean, get_world_size

        local = len(self.trainer.skipped_samples)
        total = round(all_reduce_mean({"n": local}, self.trainer.device)["n"] * get_world_size())
        self.logger.info("Bad training samples skipped (replaced) during this run: %d.", total)


def build_hooks(nodes: Sequence) -> list[HookBase]:
    """The user's hooks of `train.hooks`: a list of config nodes, each naming a HookBase
    subclass in `_target_` (any importable module, e.g. one added to PYTHONPATH) with its
    other keys as constructor arguments; interpolations such as ${output_dir} resolve
    against the whole config. This is the one place hooks are made from config.

    They run on every rank, after the evaluation, the best-checkpoint decision and the
    task's hooks, and before the writers and the checkpoint (see training_run.run_training),
    so a hook sees the iteration's evaluation and what it puts in trainer.storage is written
    at that iteration."""
    from omegaconf import OmegaConf

    from detector.instantiate import ConfigNode, instantiate

    hooks = []
    for index, node in enumerate(nodes):
        values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        hook = instantiate(ConfigNode(values, f"train.hooks[{index}]"))  # errors name train.hooks[i]
        if not isinstance(hook, HookBase):
            raise TypeError(f"train.hooks[{index}]: {type(hook).__module__}.{type(hook).__qualname__} is not a hook; a train.hooks "
                            "entry must name a subclass of detector.engine.HookBase.")
        hooks.append(hook)
    return hooks
