# The Hydra configuration, installed as the package `detector.conf` (see setup.py) so that
# `pkg://detector.conf` finds it from any working directory, with or without a checkout.
