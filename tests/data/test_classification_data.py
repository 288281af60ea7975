"""ImageFolder data for classification: class order, balanced sampling, loss weights, seeding."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from detector.data.class_balance import ClassBalancedBatchSampler, class_loss_weights, class_sampling_probabilities
from detector.data.classification_dataset import ImageFolderDataset
from detector.data.classification_folders import scan_image_folder
from detector.data.classification_transforms import build_cls_test_transform, build_cls_train_transform


def write_folder(root, counts: dict[str, int]):
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(np.full((20, 30, 3), 40 * i % 255, np.uint8)).save(root / name / f"{i}.png")


def test_labels_follow_the_training_classes(tmp_path):
    write_folder(tmp_path / "train", {"b": 2, "a": 1, "c": 1})
    write_folder(tmp_path / "test", {"c": 1, "a": 2})
    _, names = scan_image_folder(tmp_path / "train")
    assert names == ["a", "b", "c"]
    samples, _ = scan_image_folder(tmp_path / "test", names)
    assert sorted(label for _, label in samples) == [0, 0, 2]
    write_folder(tmp_path / "test", {"zebra": 1})
    with pytest.raises(ValueError, match="zebra"):
        scan_image_folder(tmp_path / "test", names)


def test_sampling_and_loss_weights_balance_classes():
    counts = [900, 50, 50]
    assert np.allclose(class_sampling_probabilities(counts, 0.0), np.array(counts) / 1000)
    assert np.allclose(class_sampling_probabilities(counts, 1.0), 1 / 3)
    weights = class_loss_weights(counts, 1.0)
    assert np.isclose((weights * counts).sum() / sum(counts), 1.0)  # average weight 1
    assert np.allclose(weights[0] * counts[0], weights[1] * counts[1])  # each class weighs the same in total


def test_balanced_sampler_is_a_function_of_the_stream_position():
    labels = [0] * 90 + [1] * 5 + [2] * 5
    sampler = ClassBalancedBatchSampler(labels, 3, batch_size=8, seed=3, strength=1.0)
    stream = iter(sampler)
    batches = [next(stream) for _ in range(200)]
    drawn = Counter(labels[i] for batch in batches for i, _ in batch)
    assert all(abs(drawn[c] / 1600 - 1 / 3) < 0.05 for c in range(3)), drawn
    resumed = iter(ClassBalancedBatchSampler(labels, 3, batch_size=8, seed=3, strength=1.0, start_iter=150))
    assert next(resumed) == batches[150]
    # Two ranks split the stream: together they see exactly what one process would at twice the batch.
    rank0 = next(iter(ClassBalancedBatchSampler(labels, 3, 4, 3, 1.0, rank=0, world_size=2)))
    rank1 = next(iter(ClassBalancedBatchSampler(labels, 3, 4, 3, 1.0, rank=1, world_size=2)))
    assert sorted(rank0 + rank1, key=lambda item: item[1]) == batches[0]


def test_training_augmentation_is_seeded_by_position(tmp_path):
    write_folder(tmp_path, {"a": 3})
    samples, names = scan_image_folder(tmp_path)
    dataset = ImageFolderDataset(samples, names, build_cls_train_transform(16, rotate90=True, color_jitter=True),
                                 train=True, seed=1)
    first, again, other = dataset[(2, 7)], dataset[(2, 7)], dataset[(2, 8)]
    assert first["image"].shape == (3, 16, 16)
    assert (first["image"] == again["image"]).all()
    assert not (first["image"] == other["image"]).all()
    test = ImageFolderDataset(samples, names, build_cls_test_transform(16), train=False)
    assert test[0]["image"].shape == (3, 16, 16) and test[0]["label"] == 0
