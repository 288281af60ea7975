"""Error analysis of a COCO results file.

A thin wrapper of detector/cli/analyze.py, the `detector-analyze` command: the same arguments (--help for the usage).
"""
from detector.cli.analyze import main, run  # noqa: F401 - main(argv): what tests call

if __name__ == "__main__":
    run()
