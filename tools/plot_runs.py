"""Runs compared: loss, lr and AP against iteration, and a table of best and final AP.

A thin wrapper of detector/cli/plot_runs.py, the `detector-plot-runs` command: the same arguments (--help for the usage).
"""
from detector.cli.plot_runs import main, run  # noqa: F401 - main(argv): what tests call

if __name__ == "__main__":
    run()
