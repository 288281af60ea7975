"""Export a trained detector to ONNX, OpenVINO IR or TorchScript.

A thin wrapper of detector/cli/export.py, the `detector-export` command: the same arguments (--help for the usage).
"""
from detector.cli.export import main, run  # noqa: F401 - main(argv): what tests call

if __name__ == "__main__":
    run()
