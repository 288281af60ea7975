"""Layer 1 of detector.weights: file formats and their integrity checks.

One module per format, each reading and writing its files safely and knowing nothing of the
others: `.pth` (torch.load with weights_only, after the zip's CRC-32 check), `.safetensors`
(a sha256 of the tensors in the header), Detectron2's `.pkl` (a restricted unpickler). Every
write goes through `atomic_write`. The one reader above them (detector/weights/checkpoint_io.py)
picks the format by the file's suffix.
"""
