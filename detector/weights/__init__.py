"""Weights in and out: strict state-dict loading, conversion of torchvision and Detectron2
weights, a restricted unpickler for Detectron2 .pkl files, and safetensors export."""
