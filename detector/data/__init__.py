"""Datasets, augmentation, samplers and loaders: files -> batches for the model.

Public entry points (docs/INTERFACES.md): class_names, build_dataset, build_train_loader,
build_test_loader. Imported lazily, so tools that only convert or check annotations
(voc2coco, check_dataset) start without importing torch.
"""
from detector.utils.lazy_exports import lazy_getattr

_EXPORTS = {
    "class_names": "detector.data.build",
    "build_dataset": "detector.data.build",
    "dataset_has_masks": "detector.data.build",
    "require_masks": "detector.data.build",
    "build_train_loader": "detector.data.loader",
    "build_test_loader": "detector.data.loader",
    "DetectionDataset": "detector.data.dataset",
    "BadSampleError": "detector.data.dataset",
    "BadSampleWarning": "detector.data.dataset",
    "DatasetError": "detector.data.coco_index",
    # For dataset formats of your own (docs/extending.md).
    "DatasetFormat": "detector.data.formats",
    "ImageBoxes": "detector.data.formats",
    # `${carved_test_images:}` (detector/config.py): the carved test split recorded in config.yaml.
    "recorded_test_images": "detector.data.folder_format",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr("detector.data", _EXPORTS)
