"""Layer 3 of detector.weights: conversion of foreign weight files into checkpoints of this project.

One converter per source, each turning a local file into ONE record (record.py:
ConvertedWeights); one assembly step (assembly.py) turns any record into a checkpoint: the config
composed from conf/ (converted_config.py), class layers re-initialised, a strict load check,
the atomic write. The sources are registered in registry.py; convert.py is the entry point.

    registry.py, record.py            the contract: WeightsSource, PublishedWeights, ConvertedWeights
    converted_config.py, assembly.py  the one assembly step
    torchvision_source.py             --source torchvision, torchvision://   (torchvision_conversion.py)
    detectron2_source.py              --source detectron2, detectron2://     (detectron2_conversion.py,
                                                                             caffe2_resnet.py)
    checkpoint_source.py              --source checkpoint (this project's files, another format)
    resnet_layout.py, coco_classes.py what several converters read
    convert.py                        convert_weights(source, input, output): registry -> converter -> assembly

Conversion reads files through the layers below it (detector/weights/checkpoint_io.py,
detector/weights/formats/) and never resolves published names: the zoo above it does
(detector/weights/zoo.py), and calls convert_weights.
"""
