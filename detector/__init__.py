"""ResNet-FPN Faster R-CNN detection and ResNet classification, configured with Hydra."""
from detector.config import load_config

__all__ = ["load_config", "build_model", "load_model"]


def __getattr__(name):
    # Imported lazily so `import detector` stays quick for tools that only need the config.
    if name == "build_model":
        from detector.modeling.build import build_model

        return build_model
    if name == "load_model":
        from detector.weights.loading import load_model

        return load_model
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
