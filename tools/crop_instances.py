"""Turn a detection dataset into an ImageFolder of object crops.

A thin wrapper of detector/cli/crop_instances.py: the same arguments (--help for the usage).
"""
from detector.cli.crop_instances import main, run  # noqa: F401 - main(argv): what tests call

if __name__ == "__main__":
    run()
