import torch
from torch import nn

from detector.engine.devices import revert_sync_batchnorm, select_device


def test_sync_bn_becomes_plain_bn_with_its_state():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
        model[1].weight.fill_(2.0)
    reverted = revert_sync_batchnorm(model)
    assert type(reverted[1]) is nn.BatchNorm2d
    assert torch.equal(reverted[1].running_mean, torch.full((4,), 0.5))
    assert torch.equal(reverted[1].weight, torch.full((4,), 2.0))
    reverted(torch.rand(2, 3, 5, 5))  # runs on the CPU


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device("auto") == torch.device("cpu")
        try:
            select_device("cuda")
        except RuntimeError as error:
            assert "train.device=cpu" in str(error)
        else:
            raise AssertionError("cuda without a GPU must fail")
