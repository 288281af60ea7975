"""Composing the Hydra configuration outside of a Hydra application.

`load_config` gives the same result as the command line of `tools/train_net.py`, so
library users, tests and tools all see one configuration tree.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix. Defined here, at
    the bottom of the package, so the engine, the tasks and the deployed-file runner all raise it."""

# conf/ is installed as the package `detector.conf` (setup.py maps it), so Hydra reads it
# through `pkg://detector.conf` from any working directory, from a wheel or a checkout.
CONFIG_MODULE = "detector.conf"


def _checkout_root() -> Path | None:
    """The repository this package runs from (an editable install or PYTHONPATH), else None."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "conf" / "config.yaml").is_file() else None


def _config_dir() -> Path:
    try:
        return Path(str(resources.files(CONFIG_MODULE)))
    except ModuleNotFoundError:  # a checkout on PYTHONPATH that was never installed
        return Path(__file__).resolve().parents[1] / "conf"


REPO_ROOT = _checkout_root()
CONFIG_DIR = _config_dir()


def _repo_path(relative: str) -> str:
    """`${repo_path:x}` resolves x against the repository root in a checkout (so the demo and
    the tests find .cache/shapes and ../shared/datasets wherever they run), and against the
    working directory when installed from a wheel, where there is no repository."""
    path = Path(relative)
    base = REPO_ROOT if REPO_ROOT is not None else Path.cwd()
    return str(path if path.is_absolute() else (base / path).resolve())


def _dataset_num_classes(*, _root_: DictConfig) -> int:
    """`${dataset_num_classes:}`: the number of classes of the configured dataset, the one place
    the class count is resolved (model.num_classes defaults to it). Read when first used, so a
    config whose model sets num_classes itself never touches the data."""
    from detector.data import class_names

    return len(class_names(_root_))


def _folder_name(path, default: str) -> str:
    """`${folder_name:${dataset.path},auto}`: the name of a dataset folder (the run's output
    folder is named after it, so two datasets never share one), or `default` without a folder."""
    if path is None or str(path) in ("", "???"):
        return str(default)
    return Path(str(path)).resolve().name or str(default)


def _carved_test_images(*, _root_: DictConfig):
    """`${carved_test_images:}`: the test images of a carved split, recorded in config.yaml
    (detector/data/folder_format.py); null when the dataset has its own test split."""
    from detector.data import recorded_test_images

    return recorded_test_images(_root_)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("folder_name"):
        OmegaConf.register_new_resolver("folder_name", _folder_name)
    if not OmegaConf.has_resolver("carved_test_images"):
        OmegaConf.register_new_resolver("carved_test_images", _carved_test_images)
    if not OmegaConf.has_resolver("repo_path"):
        OmegaConf.register_new_resolver("repo_path", _repo_path)
    if not OmegaConf.has_resolver("dataset_num_classes"):
        OmegaConf.register_new_resolver("dataset_num_classes", _dataset_num_classes)


register_resolvers()


# Re-exported: where `instantiate` lived before it moved to a leaf module (detector/instantiate.py).
from detector.instantiate import DESCRIPTIVE_KEYS, ComponentArgumentError, ConfigNode, instantiate  # noqa: E402,F401


def load_config(overrides: Iterable[str] = (), config_name: str = "config") -> DictConfig:
    """Compose `conf/<config_name>.yaml` with command-line style overrides.

    Unknown keys and unknown group options raise Hydra's errors, which name the key or
    list the valid choices.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hydra.errors import ConfigCompositionException

    overrides = list(overrides)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name=config_name, overrides=overrides)
        except ConfigCompositionException as error:
            hint = unknown_key_hint(str(error), overrides, config_name)
            if hint is None:
                raise
            raise ConfigCompositionException(f"{error}\n{hint}") from None
    # What a run decides itself (train.time_budget, schedule=auto's recipe), marked as the
    # training run marks it, so build_model(load_config([...])) builds the run's model.
    from detector.recipe.apply import mark_auto_keys

    mark_auto_keys(cfg, overrides)
    return cfg


def unknown_key_hint(message: str, overrides: list[str], config_name: str) -> str | None:
    """For `Could not override 'a.b.typo'`, list the keys that `a.b` does have."""
    match = re.search(r"Could not override '([^']+)'", message)
    if match is None:
        return None
    from hydra import compose

    bad_key = match.group(1)
    others = [o for o in overrides if not o.lstrip("+~").startswith(bad_key + "=")]
    cfg = compose(config_name=config_name, overrides=others)
    parent_key, _, _ = bad_key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return None
    import difflib

    keys = sorted(str(k) for k in parent.keys())
    valid = ", ".join(keys)
    where = f"'{parent_key}'" if parent_key else "the root"
    close = difflib.get_close_matches(bad_key.rpartition(".")[2], keys, n=1)
    guess = f" Did you mean '{parent_key + '.' if parent_key else ''}{close[0]}'?" if close else ""
    return f"Unknown key '{bad_key}'.{guess} Valid keys under {where}: {valid}"


def override_hint(overrides: Iterable[str], config_name: str = "config") -> str | None:
    """The unknown-key hint for command-line overrides that fail to compose, else None.

    Hydra applications print Hydra's own message, which names the bad key but not the
    valid ones; tools call this after such a failure to add them."""
    from hydra.errors import ConfigCompositionException

    overrides = [o for o in overrides if not o.startswith("-") and not o.lstrip("+~").startswith("hydra")]
    try:
        load_config(overrides, config_name)
    except ConfigCompositionException as error:
        lines = [line for line in str(error).splitlines() if line.startswith("Unknown key")]
        return lines[-1] if lines else None
    except Exception:  # noqa: BLE001 - only a hint; the real error was already printed
        return None
    return None
