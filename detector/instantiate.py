"""The one way a config node becomes an object: `instantiate` (a leaf module: OmegaConf and
Hydra's locator only, so the data, modeling and engine modules that build from config do not
import detector.config, which composes whole configurations and reads the data).
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


# Keys a component node may carry that are not constructor arguments: a label for folders
# and logs, a file loaded after building, and the class names carried into checkpoints.
DESCRIPTIVE_KEYS = ("name", "weights", "class_names")


class ComponentArgumentError(TypeError):
    """A config node's keys do not fit the signature of the class or function its _target_ names."""


class ConfigNode(dict):
    """A resolved sub-node handed to a builder: a plain dict that remembers where it sits in
    the config tree (`path`), so errors about it name the key the user has to change."""

    def __init__(self, values: dict, path: str):
        super().__init__(values)
        self.path = path


def _node_values(node: DictConfig, path: str) -> dict:
    """The node's keys resolved against the whole config; sub-nodes as ConfigNodes."""
    resolved = OmegaConf.to_container(node, resolve=True)

    def wrap(value, where):
        if isinstance(value, dict):
            return ConfigNode({k: wrap(v, f"{where}.{k}") for k, v in value.items()}, where)
        if isinstance(value, list):
            return [wrap(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return {key: wrap(value, f"{path}.{key}" if path else str(key)) for key, value in resolved.items()}


def instantiate(node, **runtime):
    """The one way a config node becomes an object: the class or builder function its
    `_target_` names (located as Hydra's instantiate does), called with the node's other keys,
    plus `runtime` keyword arguments for values only known while building (in_channels,
    num_classes, a dataset, ...).

    The descriptive keys (DESCRIPTIVE_KEYS) are left out. Interpolations are resolved against
    the whole config; sub-nodes arrive as dicts (ConfigNode), not built, so a builder decides
    what to build from them, with this same function. Errors name the node's key."""
    from hydra.utils import get_object

    if isinstance(node, ConfigNode):
        path, values = node.path, dict(node)
    elif isinstance(node, DictConfig):
        path = node._get_full_key(None) or ""
        values = _node_values(node, path)
    elif isinstance(node, dict):
        path, values = "", _node_values(OmegaConf.create(node), "")
    else:
        raise ValueError(f"expected a config node with a _target_, got {node!r}.")
    where = path or "<root>"
    if "_target_" not in values:
        raise ValueError(f"config node '{where}' has no _target_: it must name the class or function that builds it "
                         "(e.g. _target_: detector.modeling.backbone.resnet.ResNet).")
    target = values["_target_"]
    try:
        factory = get_object(target)
    except Exception as error:  # noqa: BLE001 - Hydra raises ImportError or its own wrapper
        raise ValueError(f"{where}._target_={target}: cannot import it ({error}). Name a class or function "
                         "importable from Python (a module on PYTHONPATH), e.g. my_package.MyBackbone.") from None
    kwargs = {key: value for key, value in values.items() if key not in DESCRIPTIVE_KEYS and key != "_target_"}
    import inspect

    try:
        inspect.signature(factory).bind(**kwargs, **runtime)
    except TypeError as error:
        raise ComponentArgumentError(
            f"{where}: {target} does not take the keys of its config node: {error}. The node passes "
            f"{sorted(kwargs)}, and the builder adds {sorted(runtime)}.") from None
    except ValueError:  # no signature to check (some builtins): let the call tell
        pass
    return factory(**kwargs, **runtime)
