"""Convert torchvision or Detectron2 weights into a checkpoint of this project.

A thin wrapper of detector/cli/convert_weights.py, the `detector-convert` command: the same arguments (--help for the usage).
"""
from detector.cli.convert_weights import main, run  # noqa: F401 - main(argv): what tests call

if __name__ == "__main__":
    run()
