"""Side-by-side speed and memory measurements (tools/benchmark.py is the command line).

Each section measures this project and, where one exists, its torchvision counterpart
with the same weights on the same inputs, alternating the two within every repeat so that
a noisy machine slows both alike; it reports medians and the ratio ours / theirs.
"""
