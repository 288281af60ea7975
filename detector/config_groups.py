"""One option of a config group (conf/<group>/<option>.yaml) as Hydra composes it, on its own.

A group option may extend another option of the same group through its defaults list, as
conf/model/faster_rcnn_fpn_v2.yaml extends faster_rcnn_fpn.yaml. Hydra resolves that when it
composes the whole tree; checkpoints and converted weights need one section alone, without
what a schedule or dataset made of it, so this reads the file and merges its bases the same way.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf


def group_option_path(group: str, option: str) -> Path:
    # Read at call time: the packaging may point CONFIG_DIR elsewhere.
    from detector import config

    return Path(config.CONFIG_DIR) / group / f"{option}.yaml"


def has_group_option(group: str, option: str | None) -> bool:
    return option is not None and group_option_path(group, str(option)).is_file()


def load_group_option(group: str, option: str, _seen: tuple[str, ...] = ()) -> DictConfig:
    """conf/<group>/<option>.yaml with its same-group defaults merged in Hydra's order: each
    entry of `defaults` in turn, `_self_` where listed (last when not listed, as in Hydra 1.1+)."""
    path = group_option_path(group, option)
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"{group}={option}: no file {path}; valid choices: {', '.join(choices)}.")
    if option in _seen:
        raise ValueError(f"{path}: its defaults list extends itself ({' -> '.join((*_seen, option))}).")
    node = OmegaConf.load(path)
    defaults = node.pop("defaults", None)
    if defaults is None:
        return node
    if not isinstance(defaults, ListConfig):
        raise ValueError(f"{path}: 'defaults' must be a list of option names of the '{group}' group.")
    entries = [str(entry) for entry in defaults]
    if "_self_" not in entries:
        entries.append("_self_")
    merged = OmegaConf.create({})
    for entry in entries:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, node)
        elif "/" in entry or ":" in entry or entry.startswith(("+", "~", "override ")):
            raise ValueError(f"{path}: defaults entry '{entry}' is not supported here; a group option may only "
                             f"extend another option of the '{group}' group by its plain name.")
        else:
            merged = OmegaConf.merge(merged, load_group_option(group, entry, (*_seen, option)))
    return merged
