import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning OpenMP threads per
    process slow these model tests down several times over."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_config(*overrides):
    """ResNet-18 detector with narrow heads: builds and trains fast on a CPU."""
    from detector.config import load_config

    return load_config([
        "backbone=resnet18",
        "model.num_classes=2",
        "model.fpn.out_channels=64",
        "model.roi_heads.fc_dim=128",
        "model.anchor_generator.sizes=[16,32,64,128,256]",
        "model.rpn.batch_size_per_image=64",
        "model.roi_heads.batch_size_per_image=32",
        *overrides,
    ])


@pytest.fixture
def make_small_config():
    return small_config
