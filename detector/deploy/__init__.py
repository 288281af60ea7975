"""Running exported files (detector-export's ONNX, OpenVINO IR and TorchScript) wherever a
checkpoint runs: detector-predict --weights FILE, and eval_only=true model.weights=FILE through
the same evaluator and test split as the PyTorch model.

    from detector.deploy import is_exported_file, load_exported
    model = load_exported("model.xml", precision="fp32")   # an nn.Module: model([image]) -> [dict]
    outs = model([image])   # image: float [3, H, W] in [0, 1], RGB; outs[0]["boxes"], ["scores"], ...

The runtime is chosen from the file's content (file_kind), never from its name: a TorchScript
archive and a torch.save checkpoint are both zip files named .pt. What the model needs besides
the file (class names, category ids, the config it was built from, the settings baked into its
graph) is read from the file itself (metadata_reader).
"""
from detector.deploy.file_kind import CHECKPOINT, EXPORTED_KINDS, file_kind, is_exported_file
from detector.deploy.loading import load_exported
from detector.deploy.metadata_reader import read_metadata

__all__ = ["CHECKPOINT", "EXPORTED_KINDS", "file_kind", "is_exported_file", "load_exported", "read_metadata"]
