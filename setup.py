"""The one thing pyproject.toml cannot declare: conf/ shipped inside the package.

The Hydra configuration stays at the top of the repository (conf/), where users read and
edit it, and is installed as the package `detector.conf` (Hydra's `pkg://detector.conf`).
pyproject's `packages.find` names packages by where they sit, so it cannot place a folder
under another name; the metadata itself lives in pyproject.toml.
"""
from setuptools import find_namespace_packages, find_packages, setup

# conf/ and its group folders (conf/backbone, ...): packages of YAML files, see package-data.
CONF_PACKAGES = ["detector.conf"] + [f"detector.conf.{name}" for name in find_namespace_packages("conf")]

setup(
    packages=find_packages(include=["detector", "detector.*"]) + CONF_PACKAGES,
    package_dir={"detector.conf": "conf"},
)
