"""Optimizer and learning-rate schedule built from cfg.solver."""
from detector.solver.lr_scheduler import WarmupLR, build_lr_scheduler
from detector.solver.optimizer import build_optimizer, parameter_groups, scaled_lr

__all__ = ["WarmupLR", "build_lr_scheduler", "build_optimizer", "parameter_groups", "scaled_lr"]
