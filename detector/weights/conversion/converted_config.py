"""The config a converted checkpoint carries, composed from conf/ like any run's.

A converter says which conf/ options its weights are (backbone and model) and which fields
differ; the config is then `load_config` of those options plus the differing fields as
overrides, stored fully resolved. So a converted file rebuilds with no other flag, and a field
conf/ adds later keeps the value conf/ gives it.
"""
from __future__ import annotations


def override_value(value) -> str:
    """`value` in Hydra's override syntax (quoted strings, [a,b] lists, null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a config override.")


def field_overrides(prefix: str, fields: dict) -> list[str]:
    """Nested `fields` as "prefix.key=value" overrides."""
    overrides = []
    for key, value in fields.items():
        if isinstance(value, dict):
            overrides += field_overrides(f"{prefix}.{key}", value)
        else:
            overrides.append(f"{prefix}.{key}={override_value(value)}")
    return overrides


def compose_converted_config(backbone: dict, model: dict, num_classes: int | None,
                             class_names: list[str] | None) -> dict:
    """The config a converted checkpoint carries, composed from conf/ like any run's
    (`load_config`): the backbone option `backbone["name"]` names (resnet50 for a ResNet conf/
    has no file for, with its blocks set), the model option `model["name"]` names (default
    faster_rcnn_fpn), then the converted fields that differ as overrides. schedule=1x: the
    model as conf/model defines it, not lightened by a CPU recipe. Stored fully resolved."""
    from omegaconf import OmegaConf

    from detector.config import CONFIG_DIR, load_config

    backbone, model = dict(backbone), dict(model)
    option = str(backbone.get("name"))
    known = (CONFIG_DIR / "backbone" / f"{option}.yaml").is_file()
    model_option = model.pop("name", "faster_rcnn_fpn")
    overrides = ["schedule=1x", f"backbone={option if known else 'resnet50'}", f"model={model_option}"]
    overrides += field_overrides("backbone", backbone)
    overrides += field_overrides("model", model)
    overrides += [f"model.num_classes={override_value(num_classes)}",
                  f"model.class_names={override_value(class_names)}"]
    return OmegaConf.to_container(load_config(overrides), resolve=True)
