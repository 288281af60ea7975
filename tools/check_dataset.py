"""The dataset doctor: every problem of a dataset; exit 0 when clean, 1 otherwise.

A thin wrapper of detector/cli/check_dataset.py, the `detector-check-dataset` command: the same arguments (--help for the usage).
"""
from detector.cli.check_dataset import main, run  # noqa: F401 - main(argv): what tests call

if __name__ == "__main__":
    run()
