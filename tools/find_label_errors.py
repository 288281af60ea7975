"""Find the mistakes in your labels: a ranked, pictured list of likely annotation errors.

A thin wrapper of detector/cli/find_label_errors.py, the `detector-find-label-errors` command: the same arguments (--help for the usage).
"""
from detector.cli.find_label_errors import main, run  # noqa: F401 - main(argv): what tests call

if __name__ == "__main__":
    run()
