"""Detect objects in an image or a folder of images.

A thin wrapper of detector/cli/predict.py, the `detector-predict` command: the same arguments (--help for the usage).
"""
from detector.cli.predict import main, run  # noqa: F401 - main(argv): what tests call

if __name__ == "__main__":
    run()
