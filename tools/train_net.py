"""Train and evaluate a detector (Hydra; also under torchrun).

A thin wrapper of detector/cli/train_net.py, the `detector-train` command: the same arguments (--help for the usage).
"""
from detector.cli.train_net import main, run  # noqa: F401 - main: what tests and launchers call

if __name__ == "__main__":
    run()
