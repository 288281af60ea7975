"""Train and evaluate a ResNet classifier (Hydra; also under torchrun).

A thin wrapper of detector/cli/train_cls.py, the `detector-train-cls` command: the same arguments (--help for the usage).
"""
from detector.cli.train_cls import main, run  # noqa: F401 - main: what tests and launchers call

if __name__ == "__main__":
    run()
