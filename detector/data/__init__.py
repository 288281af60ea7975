"""Datasets, augmentation, samplers and loaders: files -> batches for the model.

Public entry points (docs/INTERFACES.md): class_names, build_dataset, build_train_loader,
build_test_loader.
"""
from detector.data.build import build_dataset, class_names
from detector.data.dataset import BadSampleError, BadSampleWarning, DetectionDataset
from detector.data.loader import build_test_loader, build_train_loader

__all__ = [
    "class_names",
    "build_dataset",
    "build_train_loader",
    "build_test_loader",
    "DetectionDataset",
    "BadSampleError",
    "BadSampleWarning",
]
