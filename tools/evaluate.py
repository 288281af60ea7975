"""COCO box evaluation of a results file.

A thin wrapper of detector/cli/evaluate.py, the `detector-eval` command: the same arguments (--help for the usage).
"""
from detector.cli.evaluate import main, run  # noqa: F401 - main(argv): what tests call

if __name__ == "__main__":
    run()
